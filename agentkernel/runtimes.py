"""OCI runtimes for sandboxes: ``agentkernel runtime setup runsc`` (root, once).

gVisor (``runsc``, Debian's package) runs each sandbox on its own user-space kernel. Setup
writes a small launcher, ``/usr/local/libexec/agentkernel/runtimes/<name>``, that runs the
runtime with the flags this host needs (:func:`launcher_script`), then names that launcher:

- for Docker in ``/etc/docker/daemon.json`` (``runtimes``, merged with what is there), and
  dockerd reloads it on SIGHUP (no restart: running containers and images stay);
- for Podman in ``/etc/containers/containers.conf.d/`` (``[engine.runtimes]``), for the
  ``podman`` command line and services started later; a running Podman service is given the
  launcher's path by agentkernel's Podman backend (``engine.podman.runtime_launcher``), so
  it needs no restart.

The launcher's network flag: gVisor's own network stack (``sandbox``) where it works; on
Debian 12's runsc (2022) and a recent Linux it refuses to start ("cannot run with network
enabled in root network namespace": its test for the root namespace reads a file every
namespace has now), so ``--network host`` makes it use the container's network namespace
through the host's stack. A container without a namespace of its own to join (Podman's
``none``) always gets ``--network=none``, gVisor's loopback-only stack: ``host`` would
otherwise be the host's own network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

from .engine import Engine
from .engine.podman import RUNTIME_LAUNCHERS
from .errors import ConfigError, EngineError, one_line

DOCKER_CONFIG = Path("/etc/docker/daemon.json")
DOCKER_PIDFILE = Path("/var/run/docker.pid")
PODMAN_DROPINS = Path("/etc/containers/containers.conf.d")
NETWORK_MODES = ("sandbox", "host")
KNOWN = {"runsc": "runsc"}  # runtime name -> the program it runs (found on PATH)
NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")

LAUNCHER = """#!/bin/sh
# Written by `agentkernel runtime setup {name}`: {binary} with the flags this host needs.
# A container with no network namespace of its own to join gets gVisor's loopback-only
# stack (--network=none), never the host's.
network=--network={network}
bundle= previous=
for arg in "$@"; do
  case "$previous" in --bundle|-bundle|-b) bundle=$arg ;; esac
  case "$arg" in --bundle=*|-bundle=*) bundle=${{arg#*=}} ;; esac
  previous=$arg
done
if [ -n "$bundle" ] && ! grep -q '"type":"network","path":"/' "$bundle/config.json"; then
  network=--network=none
fi
exec {binary} --platform=ptrace "$network" "$@"
"""


def launcher_script(name: str, binary: str, network: str) -> str:
    """The launcher of runtime ``name``: ``binary`` on the ptrace platform (KVM is rarely
    there for a container host) with ``network`` (gVisor's ``--network``), except
    ``--network=none`` for a container created without a network namespace path."""
    if network not in NETWORK_MODES:
        raise ConfigError(f"network mode {network!r}: must be one of {', '.join(NETWORK_MODES)}")
    return LAUNCHER.format(name=name, binary=binary, network=network)


def install_launcher(name: str, network: str, folder: Path = RUNTIME_LAUNCHERS) -> Path:
    """Write runtime ``name``'s launcher (root-owned, 0755); its path."""
    if not NAME.fullmatch(name) or name not in KNOWN:
        raise ConfigError(f"runtime {name!r} unknown: agentkernel sets up {', '.join(KNOWN)}")
    binary = shutil.which(KNOWN[name])
    if binary is None:
        raise ConfigError(f"runtime {name!r}: {KNOWN[name]} is not installed (Debian: "
                          f"apt-get install {KNOWN[name]})")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = launcher_script(name, binary, network)
    if not path.exists() or path.read_text() != text:
        temporary = path.with_suffix(".new")
        temporary.write_text(text)
        temporary.chmod(0o755)
        temporary.replace(path)
    return path


def docker_config(current: str, name: str, launcher: Path) -> str:
    """daemon.json's text ``current`` with runtime ``name`` running ``launcher``."""
    try:
        config = json.loads(current) if current.strip() else {}
    except ValueError as err:
        raise ConfigError(f"{DOCKER_CONFIG} is not JSON ({one_line(err)}): fix it first") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{DOCKER_CONFIG} is not a JSON object: fix it first")
    runtimes = config.setdefault("runtimes", {})
    runtimes[name] = {"path": str(launcher)}
    return json.dumps(config, indent=2) + "\n"


def register_docker(engine: Engine, name: str, launcher: Path,
                    config: Path = DOCKER_CONFIG, pidfile: Path = DOCKER_PIDFILE) -> str:
    """Name ``launcher`` as runtime ``name`` in daemon.json and have dockerd reload it."""
    current = config.read_text() if config.exists() else ""
    wanted = docker_config(current, name, launcher)
    if wanted != current:
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(wanted)
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGHUP)
        except (OSError, ValueError) as err:
            raise EngineError(f"docker: {config} written, but dockerd was not told to reload "
                              f"it ({one_line(err)}): `systemctl reload docker`") from None
    for _ in range(50):
        if name in engine.runtimes():
            return f"docker: runtime {name} runs {launcher}"
        time.sleep(0.2)
    raise EngineError(f"docker: runtime {name} written in {config}, but dockerd does not list "
                      "it: see dockerd's log")


def register_podman(name: str, launcher: Path, dropins: Path = PODMAN_DROPINS) -> str:
    """Name ``launcher`` as runtime ``name`` for Podman (containers.conf.d)."""
    dropins.mkdir(parents=True, exist_ok=True)
    path = dropins / f"agentkernel-{name}.conf"
    path.write_text(f"# written by `agentkernel runtime setup {name}`\n"
                    f"[engine.runtimes]\n{name} = [{json.dumps(str(launcher))}]\n")
    return (f"podman: runtime {name} runs {launcher} ({path}; podman services started "
            "earlier are given the launcher by agentkernel)")


def setup(engine: Engine, name: str, network: str) -> str:
    """Install runtime ``name``'s launcher and register it with ``engine``."""
    if engine.remote:
        raise ConfigError(f"{engine.kind} at {engine.base_url} is remote: run `agentkernel "
                          "runtime setup` on its host")
    launcher = install_launcher(name, network)
    if engine.kind == "podman":
        return register_podman(name, launcher)
    return register_docker(engine, name, launcher)
