#!/usr/bin/env bash
# Set-up from nothing: container engines, the test image, a venv with the package.
# Idempotent: every step is skipped when its result is already there.
#   scripts/setup.sh            engines (Docker, and Podman unless AGENTKERNEL_SETUP_PODMAN=0), image, venv,
#                               and the scale-out set-up (unless AGENTKERNEL_SETUP_SCALEOUT=0)
#   AGENTKERNEL_SETUP_FOR=demo  only what notebooks/quickstart.ipynb needs (scripts/demo): one
#                               engine (Docker, or Podman with AGENTKERNEL_ENGINE=podman), the
#                               image, the venv with papermill, the kernelspec, the guarded network
# Prints the venv's python path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${AGENTKERNEL_VENV:-$ROOT/.venv}
IMAGE=${AGENTKERNEL_IMAGE:-agentkernel-test:latest}
PODMAN_SOCK=/run/podman/podman.sock
FOR=${AGENTKERNEL_SETUP_FOR:-test}
case "$FOR" in test|demo) ;; *) echo "[setup] AGENTKERNEL_SETUP_FOR=$FOR: expected test or demo" >&2; exit 2 ;; esac
WANT_PODMAN=${AGENTKERNEL_SETUP_PODMAN:-1}
WANT_DOCKER=1
if [ "$FOR" = demo ]; then  # one engine: the one AGENTKERNEL_ENGINE names, else Docker
  WANT_PODMAN=0
  [ "${AGENTKERNEL_ENGINE:-}" = podman ] && WANT_PODMAN=1 WANT_DOCKER=0
fi
log() { printf '[setup] %s\n' "$*" >&2; }
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

need_apt=()
[ "$WANT_DOCKER" = 1 ] && { command -v dockerd >/dev/null || need_apt+=(docker.io); }
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v nft >/dev/null || need_apt+=(nftables)  # the guarded network's rules (its own table)
if [ "$FOR" = test ]; then
  command -v busybox >/dev/null || need_apt+=(busybox-static)
  command -v docker-registry >/dev/null || need_apt+=(docker-registry)  # a local registry for pull tests
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v runsc >/dev/null || need_apt+=(runsc)  # gVisor, for the tests under it
fi
if [ "$WANT_PODMAN" = 1 ]; then
  command -v podman >/dev/null || need_apt+=(podman uidmap slirp4netns fuse-overlayfs)
  [ -x /usr/libexec/podman/catatonit ] || [ -x /usr/bin/catatonit ] || need_apt+=(catatonit)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "missing ${need_apt[*]}; run as root or install them"; exit 1; fi
  log "installing ${need_apt[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

# --- Docker ---------------------------------------------------------------
if [ "$WANT_DOCKER" = 1 ] && ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log
  start_daemon /var/log/agentkernel-dockerd.log dockerd
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/agentkernel-dockerd.log"; tail -20 /var/log/agentkernel-dockerd.log >&2; exit 1; }
fi

# --- Podman ---------------------------------------------------------------
if [ "$WANT_PODMAN" = 1 ]; then
  conf=/etc/containers/containers.conf
  if ! grep -q agentkernel "$conf" 2>/dev/null; then
    log "lowering podman's default ulimits in $conf"
    mkdir -p /etc/containers
    cat >>"$conf" <<'CONF'
# agentkernel: the default ulimits exceed this machine's hard limits
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
init_path = "/usr/bin/catatonit"
CONF
  fi
  registries=/etc/containers/registries.conf.d/agentkernel-test.conf
  if [ ! -f "$registries" ]; then
    mkdir -p "$(dirname "$registries")"
    printf '[[registry]]\nlocation = "127.0.0.1:5077"\ninsecure = true\n' >"$registries"
  fi
  if ! curl -s --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1; then
    log "starting podman API service on $PODMAN_SOCK"
    mkdir -p "$(dirname "$PODMAN_SOCK")"
    rm -f "$PODMAN_SOCK"  # a stale socket from a killed service
    start_daemon /var/log/agentkernel-podman.log podman system service --time=0 "unix://$PODMAN_SOCK"
    for _ in $(seq 1 30); do curl -s --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1 && break; sleep 1; done
    curl -s --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1 || { log "podman service did not come up"; tail -20 /var/log/agentkernel-podman.log >&2; exit 1; }
  fi
fi

# --- venv -----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.agentkernel-installed"
# also when something changed a package the test extras pin (the differential compares with them)
pins_hold() {
  "$VENV/bin/python" - <<'PY'
import re, sys, tomllib
from importlib.metadata import PackageNotFoundError, version
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
for pin in (re.fullmatch(r"([\w.-]+)==([^;\s]+)", d.strip()) for d in extras["test"]):
    try:
        if pin and version(pin[1]) != pin[2]:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}
if [ "$FOR" = demo ] && [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then
  :  # the test extras hold the demo's
elif [ "$FOR" = demo ]; then
  if [ ! -f "$stamp-demo" ] || [ pyproject.toml -nt "$stamp-demo" ]; then
    log "installing agentkernel[demo] into $VENV"
    "$VENV/bin/pip" install -q -e ".[demo]"
    touch "$stamp-demo"
  fi
elif [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! pins_hold; then
  log "installing agentkernel[test] into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e ".[test]"
  touch "$stamp"
fi
# The package's dependencies (with the gateway extra) as wheels, and setuptools to build it, for
# the tests that install a freshly built wheel into a fresh venv without an index
# (tests/unit/test_wheel_install.py, tests/engine/test_scaleout_doc.py).
wheels=$VENV/wheels
if [ "$FOR" = test ] && { [ ! -f "$wheels/.complete" ] || [ pyproject.toml -nt "$wheels/.complete" ]; }; then
  log "collecting the package's dependencies as wheels in $wheels"
  "$VENV/bin/pip" wheel -q --wheel-dir "$wheels" ".[gateway]" "setuptools>=77" >/dev/null
  rm -f "$wheels"/agentkernel-*.whl
  touch "$wheels/.complete"
fi
# Byte code for the package's own modules: an editable install has none, and where
# PYTHONDONTWRITEBYTECODE is set every kernel would compile them again at its start.
"$VENV/bin/python" -m compileall -q agentkernel agentkernel_kernel >/dev/null
"$VENV/bin/python" -m agentkernel_kernel install --sys-prefix >/dev/null

# --- test image -----------------------------------------------------------
# Debian's Python with what the demo and the differential corpus import (pandas' Styler needs
# jinja2), from bookworm: the venv pins the same versions of numpy, pandas and matplotlib.
engines=()
[ "$WANT_DOCKER" = 1 ] && engines+=(docker)
[ "$WANT_PODMAN" = 1 ] && engines+=(podman)
"$VENV/bin/agentkernel" image build --tag "$IMAGE" --if-missing --engines "${engines[@]}" \
  --packages python3 python3-matplotlib python3-pandas python3-jinja2 iproute2 procps >&2
# Debian's own scientific stacks, no IPython (tests/engine/test_distro_matplotlib.py): bookworm's
# matplotlib 3.6 gets agentkernel's IPython 8, trixie's 3.10 the host's IPython
# (tests only: the demo does not use them)
if [ "$FOR" = test ]; then
  for suite in bookworm trixie; do
    "$VENV/bin/agentkernel" image build --tag "agentkernel-scipy:$suite" --suite "$suite" \
      --if-missing --engines "${engines[@]}" \
      --packages python3 python3-matplotlib python3-numpy python3-pandas >&2
  done
fi
# that IPython 8 (agentkernel/sandbox/ipython8.py), installed now so that no test fetches it
"$VENV/bin/python" -c 'from agentkernel.sandbox import ipython8; ipython8.ensure_installed()'
# the same with ipywidgets and tqdm (PyPI wheels), for the JupyterLab widgets test
if [ "$FOR" = test ]; then
  AGENTKERNEL_IMAGE="$IMAGE" PYTHONPATH="$ROOT/tests" "$VENV/bin/python" -m helpers.widgets_image \
    --if-missing --engines "${engines[@]}" >&2
fi

# --- the guarded network: where sandboxes with the network go (agentkernel/netguard.py) ------
# Firewall rules are gone after a reboot, so this runs every time (idempotent).
"$VENV/bin/agentkernel" network setup --engines "${engines[@]}" >&2
# Its keeper (agentkernel/netwatch.py) puts the table back when a firewall reload removes or
# changes it; a kernel that cannot read the ruleset (a user's) trusts the rules while it runs.
guard_kept() {
  "$VENV/bin/python" -c 'import sys; from agentkernel import netguard; sys.exit(not netguard.kept())'
}
if ! guard_kept; then
  start_daemon /var/log/agentkernel-netwatch.log "$VENV/bin/agentkernel" network watch
  for _ in $(seq 50); do guard_kept && break; sleep 0.1; done
  guard_kept || { log "agentkernel network watch did not start (/var/log/agentkernel-netwatch.log)"; exit 1; }
fi

# --- Podman: a user namespace per sandbox (UsernsMode auto takes ids for "containers") -------
if [ "$WANT_PODMAN" = 1 ]; then
  for ids in /etc/subuid /etc/subgid; do
    grep -q '^containers:' "$ids" 2>/dev/null || echo 'containers:2147483647:2147483648' >>"$ids"
  done
fi

# --- gVisor: runsc as a runtime (agentkernel/runtimes.py), for the tests and bench under it ---
# Debian 12's runsc (2022) cannot start its own network stack on a recent Linux: --network host
# (the container's namespace through the host's stack). Podman's API cannot choose a runtime per
# container, so its gVisor sandboxes come from a second service whose default runtime it is.
if [ "$FOR" = test ]; then
  "$VENV/bin/agentkernel" runtime setup runsc --network host --engines "${engines[@]}" >&2
  runsc_sock=/run/podman/podman-runsc.sock
  if [ "$WANT_PODMAN" = 1 ] && ! curl -s --unix-socket "$runsc_sock" http://d/_ping >/dev/null 2>&1; then
    log "starting the podman API service for gVisor sandboxes on $runsc_sock"
    rm -f "$runsc_sock"
    start_daemon /var/log/agentkernel-podman-runsc.log podman \
      --runtime /usr/local/libexec/agentkernel/runtimes/runsc system service --time=0 "unix://$runsc_sock"
    for _ in $(seq 1 30); do curl -s --unix-socket "$runsc_sock" http://d/_ping >/dev/null 2>&1 && break; sleep 1; done
  fi
fi

# --- scale-out: sshd on loopback, a TLS engine, Enterprise Gateway (docs/scale-out.md) -------
if [ "$FOR" = test ] && [ "${AGENTKERNEL_SETUP_SCALEOUT:-1}" = 1 ]; then
  scripts/setup-scaleout.sh "$VENV" "$IMAGE"
fi
echo "$VENV/bin/python"
