"""The set-up scripts leave nothing holding their callers' pipes.

`scripts/test` reads the venv's python from `scripts/setup.sh`'s output; a daemon set-up starts
(dockerd, the Podman service) that kept that output open made the caller wait for ever, which is
how a CI run on a machine with no engine running hung until its time ran out.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
DAEMON_S = 30


def _bash(script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        cwd=SCRIPTS.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
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
