"""Helpers for the fault and security tests: process figures, faults injected mid-cell, and
engines stopped and started for real (never mocked)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient

from agentkernel.engine import Engine, connect_url
from helpers.kernels import Run, wait_until

REPO = Path(__file__).resolve().parents[2]

MARKER = "agentkernel-cell-under-way"  # printed by a cell once it runs, to time faults from
SKIPPED = ("status", "execute_input")


@dataclass
class ProcStats:
    """Figures of one host process, from /proc."""

    rss_mb: float
    peak_rss_mb: float
    threads: int
    fds: int

    def __str__(self) -> str:
        return (f"RSS {self.rss_mb:.1f} MB (peak {self.peak_rss_mb:.1f} MB), "
                f"{self.threads} threads, {self.fds} fds")


def proc_stats(pid: int) -> ProcStats:
    """RSS, peak RSS (VmHWM), thread count and open fds of process ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()[0] if value.split() else ""
    return ProcStats(
        rss_mb=int(fields["VmRSS"]) / 1024,
        peak_rss_mb=int(fields["VmHWM"]) / 1024,
        threads=int(fields["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def run_with_fault(kc: BlockingKernelClient, code: str, inject: Any = None,
                   timeout: float = 60) -> tuple[Run, float]:
    """Run ``code``, which prints MARKER once under way; at that moment call ``inject()``.

    Returns the run and the seconds from the marker's arrival to the end of the execute.
    """
    messages: list[dict[str, Any]] = []
    stamps: list[float] = []
    fault_at: list[float] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] in SKIPPED:
            return
        messages.append(msg)
        stamps.append(time.monotonic())
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if not fault_at and MARKER in text:
            fault_at.append(time.monotonic())
            if inject is not None:
                inject()

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    assert fault_at, f"the cell never printed {MARKER}: {messages}"
    return Run(reply, messages, stamps), time.monotonic() - fault_at[0]


def one_line_error(run: Run, *fragments: str) -> str:
    """The run's one error message, checked to be a single line holding every fragment."""
    assert run.status == "error", run.messages
    assert len(run.of("error")) == 1, run.messages
    evalue = run.error["evalue"]
    assert "\n" not in evalue and all(f in evalue for f in fragments), evalue
    return evalue


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


class DockerDaemon:
    """The host's dockerd: stopped with SIGTERM to its pid and started again exactly as
    scripts/setup.sh starts it. Stopping it stops every Docker container (no live-restore)."""

    PIDFILE = Path("/var/run/docker.pid")
    SOCKET = Path("/var/run/docker.sock")
    # scripts/setup.sh's own start: a session of its own, none of this process's descriptors,
    # so it outlives this test's process group (a CI step or a tool that ends that group)
    START = "source scripts/lib.sh && start_daemon /var/log/agentkernel-dockerd.log dockerd"
    env: dict[str, str] = {}  # kernels reach it at its default address

    def __init__(self, engine: Engine):
        self.engine = engine
        self._pid: int | None = None

    def signal_stop(self) -> None:
        """Send SIGTERM; the daemon goes on shutting down in the background."""
        self._pid = int(self.PIDFILE.read_text().strip())
        os.kill(self._pid, signal.SIGTERM)

    def wait_stopped(self) -> float:
        """Seconds until its process ended and its socket is gone."""
        pid = self._pid
        return wait_until(lambda: not self.SOCKET.exists() and not (pid and _alive(pid)), 60,
                        "dockerd stopping")

    def start(self) -> float:
        """Start it as scripts/setup.sh does; seconds until the engine fixture's client pings."""
        subprocess.run(["bash", "-c", self.START], check=True, cwd=REPO)
        return wait_until(self.engine.ping, 60, "dockerd answering", step=0.2)

    def ensure_running(self) -> None:
        """Whatever happened, leave dockerd answering."""
        if self._pid is not None and _alive(self._pid):  # a stop asked for may be under way
            self.wait_stopped()
        if not self.engine.ping():
            self.start()

    def close(self) -> None:
        self.ensure_running()


class PodmanService:
    """A `podman system service` of the test's own, on a private socket: stopping it does not
    disturb the shared service other tests use, and Podman keeps containers in its storage,
    not in the service, so a service of its own sees and manages the same ones."""

    def __init__(self, folder: Path):
        self.socket = folder / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.env = {"DOCKER_HOST": self.url, "AGENTKERNEL_ENGINE": "podman"}
        self._log = folder / "podman-service.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _answers(self) -> bool:
        try:
            connect_url("podman", self.url, timeout=2).close()
        except Exception:
            return False
        return True

    def start(self) -> float:
        """Start the service; seconds until it answers."""
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                ["podman", "system", "service", "--time=0", self.url],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            )
        return wait_until(self._answers, 60, "podman service answering", step=0.2)

    def signal_stop(self) -> None:
        assert self._proc is not None
        self._proc.terminate()

    def wait_stopped(self) -> float:
        start = time.monotonic()
        assert self._proc is not None
        self._proc.wait(timeout=60)
        self.socket.unlink(missing_ok=True)
        return time.monotonic() - start

    def ensure_running(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self.start()

    def close(self) -> None:
        """Stop the service this object started."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
