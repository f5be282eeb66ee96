"""A dockerd of a test's own: its own data root, exec root, socket and containerd, under one
short folder in /tmp, with the extra flags a test gives (``--userns-remap=default``), in a
network namespace of its own with no network (``--bridge=none``, no firewall rules), and always
stopped and removed afterwards: its containers, its daemons (SIGTERM, then SIGKILL), the mounts
it left and the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agentkernel.engine import Endpoint, Engine, connect_endpoint
from agentkernel.errors import EngineUnavailable
from agentkernel.imagebuild import remove_build_folder
from helpers.required import unavailable

UP_S = 20.0
"""Longest wait for the daemon to answer (it takes about 0.4 s here)."""
TERM_S = 8.0
"""Longest wait for the daemon to end after SIGTERM (about 2.5 s), before SIGKILL."""
ENGINE_PROCESSES = ("dockerd", "containerd")
"""What a daemon of ours runs, by the start of its name (``containerd-shim-runc-v2`` too)."""


@contextlib.contextmanager
def own_dockerd(flags: Sequence[str]) -> Iterator[Engine]:
    """A dockerd started with ``flags`` (beyond where its files go), connected; every trace of
    it removed on the way out, whatever happened inside."""
    if not shutil.which("dockerd"):
        unavailable("dockerd is not installed (scripts/setup.sh installs it)")
    if os.geteuid() != 0:
        unavailable("a dockerd of the test's own needs root")
    # short: the unix sockets under it (containerd's) must fit in 108 bytes
    root = Path(tempfile.mkdtemp(prefix="akd-", dir="/tmp"))
    root.chmod(0o711)  # a remapped root must traverse it to its data root
    (root / "daemon.json").write_text("{}")  # not /etc/docker/daemon.json: the host engine's
    socket = root / "docker.sock"
    daemon = None
    engine = None
    try:
        with open(root / "dockerd.log", "wb") as log:
            # In a network namespace of its own: a dockerd with --bridge=none deletes the
            # default bridge's interface (docker0) where it runs, the host engine's included.
            daemon = subprocess.Popen(
                ["unshare", "--net", "dockerd", "--config-file", str(root / "daemon.json"),
                 "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                 "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{socket}",
                 "--bridge=none", "--iptables=false", "--ip6tables=false", *flags],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", env=_daemon_env(),
                start_new_session=True)
        engine = _connected(Endpoint(f"unix://{socket}"), daemon, root / "dockerd.log")
        yield engine
    finally:
        if engine is not None:
            _remove_containers(engine)
            engine.close()
        if daemon is not None:
            _stop(daemon)
        _kill_leftovers(root)
        remove_build_folder(root)


def _daemon_env() -> dict[str, str]:
    """This process's environment without what points a Docker client elsewhere (dockerd takes
    its TLS defaults from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH), with the folders of useradd
    and usermod on PATH (the remap's user is made with them)."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("DOCKER_") and name != "CONTAINER_HOST"}
    env["PATH"] = f"{env.get('PATH', '')}:/usr/sbin:/usr/bin:/sbin:/bin".lstrip(":")
    return env


def _connected(endpoint: Endpoint, daemon: subprocess.Popen[bytes], log: Path) -> Engine:
    """The engine at ``endpoint`` once it answers; fails the test with the daemon's last
    words when it ends or does not answer within UP_S."""
    deadline = time.monotonic() + UP_S
    while daemon.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(EngineUnavailable):
            return connect_endpoint("docker", endpoint, timeout=2)
        time.sleep(0.1)
    tail = " | ".join(log.read_text(errors="replace").splitlines()[-5:])
    pytest.fail(f"our dockerd did not answer (exit {daemon.poll()}): {tail}", pytrace=False)


def _remove_containers(engine: Engine) -> None:
    """Remove every container of the daemon, so no shim outlives it."""
    for container in engine.list_containers([], all=True):
        with contextlib.suppress(Exception):
            engine.remove_container(container.id)


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM (it stops its containerd and unmounts its data root), SIGKILL after TERM_S."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(TERM_S)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _kill_leftovers(root: Path) -> None:
    """SIGKILL, by its id, each engine process (dockerd, containerd, a shim) whose command line
    names ``root``: ours, should the daemon have died without ending them."""
    mark = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name.startswith(ENGINE_PROCESSES) and mark in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:  # gone meanwhile (ProcessLookupError among them)
            continue
