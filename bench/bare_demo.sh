#!/usr/bin/env bash
# How long scripts/demo takes from a bare machine of this kind: Debian bookworm with Python 3.11,
# pip, venv, gcc and the Python headers, git, curl; no container engine, no debootstrap, no
# nftables (the demo installs them). It builds that machine as an image (debootstrap, cached as
# agentkernel-bare:bookworm), starts it privileged on Docker's default bridge (not the host's
# network: its engine's firewall rules stay in its own namespace) with its own engine's storage
# on volumes and a private cgroup namespace, copies in a clean clone of this repository at REV,
# runs scripts/demo inside, and prints each line with the seconds since the start, the phases
# (apt, engine start, venv, image build, the rest of set-up, notebook), the total and the load
# average meanwhile; it writes them to bench/results/bare-demo.json.
#   bench/bare_demo.sh [REV]        REV: a commit of this repository (default HEAD)
#   AGENTKERNEL_BARE_REBUILD=1      build the bare image again
#   AGENTKERNEL_BARE_KEEP=1         leave the container and its volumes (for a look inside)
# What a new machine here has beside Debian's packages goes in too, when this machine has it:
# its CA certificates (/usr/local/share/ca-certificates), its apt sources, its pip configuration
# (/etc/pip.conf, /etc/xdg/pip, the PIP_* variables) with the wheel folders it names (mounted
# read-only), and the docker command line client in /usr/local/bin (a client, no engine).
# Needs root, a Docker engine and debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REV=${1:-HEAD}
BARE=${AGENTKERNEL_BARE_IMAGE:-agentkernel-bare:bookworm}
PACKAGES=python3,python3-venv,python3-pip,python3-dev,gcc,git,ca-certificates,curl
RESULT=$ROOT/bench/results/bare-demo.json
log() { printf '[bare] %s\n' "$*" >&2; }

work=$(mktemp -d /tmp/agentkernel-bare-XXXXXX)
name=agentkernel-bare-demo-$$
volumes=("$name-docker" "$name-containers")
sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  if [ "${AGENTKERNEL_BARE_KEEP:-0}" != 1 ]; then
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker volume rm "${volumes[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the bare machine as an image -------------------------------------------------------------
build_bare() {
  local root=$work/root
  log "debootstrap bookworm with $PACKAGES into $root"
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
    rm -f "$root/etc/apt/sources.list"
  fi
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
  [ -d /etc/xdg/pip ] && mkdir -p "$root/etc/xdg" && cp -r /etc/xdg/pip "$root/etc/xdg/"
  [ -x /usr/local/bin/docker ] && cp /usr/local/bin/docker "$root/usr/local/bin/docker"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | docker import --change 'CMD ["sleep", "infinity"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BARE" >/dev/null
  rm -rf "$root"
  log "built $BARE"
}
if [ "${AGENTKERNEL_BARE_REBUILD:-0}" = 1 ] || ! docker image inspect "$BARE" >/dev/null 2>&1; then
  build_bare
fi

# --- a clean clone, the machine started -------------------------------------------------------
commit=$(git rev-parse "$REV")
git clone -q --no-hardlinks "$ROOT" "$work/agentkernel"
git -C "$work/agentkernel" checkout -q "$commit"
mounts=()
for folder in /opt/wheels /opt/pypi /opt/pypi-more; do
  [ -d "$folder" ] && mounts+=(-v "$folder:$folder:ro")
done
envs=()
while IFS= read -r var; do envs+=(-e "$var"); done < <(env | grep '^PIP_' | cut -d= -f1)
docker volume create "${volumes[0]}" >/dev/null
docker volume create "${volumes[1]}" >/dev/null
# --privileged asks for every capability the runtime knows, and this machine's own root has no
# CAP_SYS_RESOURCE (runc: "unable to apply caps"); so all but that, with what --privileged adds
# beside: no seccomp filter, unmasked /proc, every device, and /sys and the cgroups writable
# (remounted inside, where CAP_SYS_ADMIN allows it).
docker run -d --name "$name" --cap-add ALL --cap-drop SYS_RESOURCE \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
  --security-opt systempaths=unconfined --device-cgroup-rule 'a *:* rwm' \
  --cgroupns private --network bridge \
  -v "${volumes[0]}:/var/lib/docker" -v "${volumes[1]}:/var/lib/containers" \
  "${mounts[@]}" "$BARE" >/dev/null
docker exec "$name" sh -c 'mount -o remount,rw /sys &&
  awk '"'"'$3 ~ /^cgroup/ {print $2}'"'"' /proc/mounts | while read -r m; do mount -o remount,bind,rw "$m"; done'
docker cp -q "$work/agentkernel" "$name:/root/agentkernel"

# --- scripts/demo, timed from outside ----------------------------------------------------------
loads=$work/loads
(while :; do cut -d' ' -f1 /proc/loadavg; sleep 5; done) >"$loads" &
sampler=$!
log "running scripts/demo at ${commit:0:12} in $name (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
t0=${EPOCHREALTIME/./}
status=0
docker exec "${envs[@]}" "$name" bash -c 'cd /root/agentkernel && scripts/demo' 2>&1 \
  | while IFS= read -r line; do
      us=$(( ${EPOCHREALTIME/./} - t0 ))
      printf '%4d.%d %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$line"
    done | tee "$work/demo.log" || status=$?
total_us=$(( ${EPOCHREALTIME/./} - t0 ))
kill "$sampler" 2>/dev/null; sampler=
if ! grep -q '^ *[0-9.]* demo took' "$work/demo.log"; then
  status=1
  # e.g. this machine's engine restarted under the run (the container stops with it)
  log "the demo did not finish; its container: $(docker inspect -f '{{.State.Status}}, started {{.State.StartedAt}}' "$name" 2>&1)"
fi

python3 - "$work/demo.log" "$loads" "$total_us" "$commit" "$status" "$RESULT" <<'PY'
import json, re, sys, time
log_path, loads_path, total_us, commit, status, result = sys.argv[1:]
lines = []
for raw in open(log_path, errors="replace"):
    t, _, text = raw.strip().partition(" ")
    lines.append((float(t), text.strip()))
# where each phase starts: the first line matching its pattern (set-up's own order)
marks = [
    ("apt: docker.io, debootstrap, nftables", r"^\[setup\] installing (?!agentkernel)"),
    ("engine start", r"^\[setup\] starting (dockerd|podman)"),
    ("venv with agentkernel[demo]", r"^\[setup\] creating venv"),
    ("test image: debootstrap, import, build folder removed", r"^debootstrap \w+ from"),
    ("IPython 8, guarded network", r"^sha256:"),
    ("notebook", r"^\[demo\] running notebooks"),
]
starts = []
for phase, pattern in marks:
    hit = next((t for t, text in lines if re.search(pattern, text)), None)
    if hit is not None:
        starts.append((phase, hit))
end = float(total_us) / 1e6
ok = status == "0"
own = next((text for _, text in lines if text.startswith("demo took")), "")
loads = [float(x) for x in open(loads_path).read().split()] or [0.0]
load = {"min": min(loads), "mean": round(sum(loads) / len(loads), 2), "max": max(loads)}
rows = [{
    "what": "scripts/demo from a bare machine, end to end", "value": round(end, 1), "unit": "s",
    "baseline": "-", "baseline_value": None, "target": "<= 240 s", "ratio": None,
    "met": ok and end <= 240, "note": own or "the demo did not finish",
}]
for (phase, t), nxt in zip(starts, [s[1] for s in starts[1:]] + [end]):
    rows.append({"what": f"phase: {phase}", "value": round(nxt - t, 1), "unit": "s",
                 "baseline": "-", "baseline_value": None, "target": "(reference)",
                 "ratio": None, "met": True, "note": ""})
record = {
    "engine": "docker", "image": "agentkernel-test:latest", "commit": commit,
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "machine": "Debian bookworm (debootstrapped), its own Docker inside a container on the "
               "default bridge; 2 cores shared with other work",
    "load_1min": {**load, "cores": 2}, "ok": ok, "rows": rows,
}
print()
for row in rows[1:] + rows[:1]:
    print(f"{row['value']:7.1f} s  {row['what']}")
print(f"{'':10}{own or 'the demo did not finish'}; target 240 s")
print(f"load average (1 min) during the run: min {load['min']}, mean {load['mean']}, "
      f"max {load['max']} on 2 cores")
if ok:  # a failed run leaves the last result as it was
    with open(result, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"written: {result}")
PY
exit "$status"
