"""The set-up scripts leave nothing holding their callers' pipes.

`scripts/test` reads the venv's python from `scripts/setup.sh`'s output; a daemon set-up starts
(dockerd, the Podman service) that kept that output open made the caller wait for ever, which is
how a CI run on a machine with no engine running hung until its time ran out.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
DAEMON_S = 30


def _bash(script: str, timeout: float,
          pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        cwd=SCRIPTS.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        pass_fds=pass_fds,
    )


def _stop(marker: str) -> None:
    subprocess.run(["pkill", "-f", marker], check=False)


@pytest.mark.parametrize("reader", ["substitution", "pipe to tail"])
def test_start_daemon_leaves_the_callers_output(tmp_path: Path, reader: str) -> None:
    """The caller's output ends when the script does, though the daemon runs on."""
    marker = f"agentkernel-test-daemon-{tmp_path.name}"
    log = tmp_path / "daemon.log"
    inner = (
        f"source scripts/lib.sh; start_daemon {log} bash -c 'exec -a {marker} sleep {DAEMON_S}';"
        " echo /the/python"
    )
    outer = f'out=$({inner}); echo "$out"'
    if reader == "pipe to tail":
        outer = f'out=$( ( {inner} ) | tail -n 1 ); echo "$out"'
    started = time.monotonic()
    try:
        done = _bash(outer, timeout=DAEMON_S - 10)
        assert done.stdout.strip() == "/the/python"
        assert time.monotonic() - started < DAEMON_S - 10
        running = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
        assert running.stdout.strip(), "the daemon should run on after the script"
        cwd = Path(f"/proc/{running.stdout.split()[0]}/cwd").resolve()
        assert cwd == Path("/")
    finally:
        _stop(marker)


def test_setup_python_reads_the_last_line_and_keeps_the_status(tmp_path: Path) -> None:
    fake = tmp_path / "scripts"
    fake.mkdir()
    (fake / "lib.sh").write_text((SCRIPTS / "lib.sh").read_text())
    (fake / "setup.sh").write_text("#!/bin/bash\necho noise\necho /venv/bin/python\nexit ${1:-0}\n")
    (fake / "setup.sh").chmod(0o755)
    ok = subprocess.run(
        ["bash", "-c", "source scripts/lib.sh; setup_python 0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "/venv/bin/python\n", "noise\n")
    failed = subprocess.run(
        ["bash", "-c", "set -e; source scripts/lib.sh; p=$(setup_python 3); echo reached"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert failed.returncode == 3 and "reached" not in failed.stdout


@pytest.mark.parametrize("script", ["setup.sh", "setup-scaleout.sh"])
def test_set_up_starts_daemons_only_through_start_daemon(script: str) -> None:
    """A command put in the background by hand would hold the set-up's output again."""
    text = (SCRIPTS / script).read_text()
    joined = re.sub(r"\\\n", " ", text)
    background = [
        line.strip()
        for line in joined.splitlines()
        if re.search(r"(?<![&>])&\s*\)?\s*$", line) and not line.lstrip().startswith("#")
    ]
    assert background == []
    assert "source scripts/lib.sh" in text


def test_start_daemon_closes_every_inherited_descriptor_but_the_standard_three(
        tmp_path: Path) -> None:
    """A descriptor the caller holds (a CI step's lock or pipe, here a pipe's write end on fd 7)
    is not held by the daemon: the pipe ends when the caller does, though the daemon runs on."""
    read_end, write_end = os.pipe()
    marker = f"agentkernel-test-fds-{tmp_path.name}"
    script = (f"exec 7>&{write_end} {write_end}>&-; source scripts/lib.sh; "
              f"start_daemon {tmp_path / 'daemon.log'} bash -c 'exec -a {marker} sleep "
              f"{DAEMON_S}'; echo $!")
    try:
        done = _bash(script, timeout=20, pass_fds=(write_end,))
    finally:
        os.close(write_end)
    pid = int(done.stdout.split()[-1])
    try:
        deadline = time.monotonic() + 10
        # argv[0] is the marker once `exec -a` ran (before, the marker is only in bash's -c
        # argument, and bash may still hold a descriptor of its own start)
        while Path(f"/proc/{pid}/cmdline").read_text(errors="replace").split("\0")[0] != marker:
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
        ready, _, _ = select.select([read_end], [], [], 10)
        assert ready and os.read(read_end, 1) == b"", "the pipe reaches its end"
    finally:
        os.close(read_end)
        os.kill(pid, signal.SIGTERM)

