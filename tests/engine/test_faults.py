"""Faults and floods, through the real kernel on each engine: nothing hangs, nothing leaks.

Kernel killed with a persistent sandbox; container killed, out of memory or runner crashed while
a cell runs; the engine itself restarted; fork bombs; a full tmpfs; a gigabyte of output; odd
bytes; 5,000 cells in one kernel; two kernels wanting the same sandbox name. Every figure the
issue asks for (seconds to detect each fault, kernel RSS, fds, threads) is printed (``-s``).
"""

from __future__ import annotations

import ast
import os
import queue
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.engines import ENGINES, TEST_IMAGE, get_engine, labelled
from helpers.faultkit import (
    MARKER,
    DockerDaemon,
    PodmanService,
    one_line_error,
    proc_stats,
    run_with_fault,
)
from helpers.kernels import execute, kernel_containers, running_kernel, wait_until
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from agentkernel.engine import Engine
from agentkernel.errors import RunnerGone
from agentkernel.manager import RESTART_HINT
from agentkernel.runner_client import INBOX_LIMIT, STREAM_MERGE_LIMIT, RunnerSession
from agentkernel.sandbox import LABEL_OWNER, tmpfs_mb

pytestmark = pytest.mark.engine

DETECT_WITHIN = 5.0  # seconds from a fault to the cell's error
FLOOD_MB = 1024  # the gigabyte print (about 30 s per engine here)
SILENT_FLOOD_MB = 256  # printed while the client reads nothing
PEAK_RSS_LIMIT_MB = 600
SOAK_CELLS = 5000
SOAK_ENGINE = ENGINES[0]  # the soak runs on one engine (docker unless narrowed)


@pytest.fixture(autouse=True)
def _kernelspec(kernelspec: None) -> None:
    """Every test here needs the kernelspec, also those that start their own kernel."""


def kernel_pid(km: KernelManager) -> int:
    return km.provisioner.process.pid


def recovers(kc: BlockingKernelClient) -> None:
    """%sandbox restart brings a working sandbox back."""
    assert execute(kc, "%sandbox restart", timeout=120).status == "ok"
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}


# -- the kernel killed, a persistent sandbox kept -------------------------------------------------
def test_persistent_sandbox_survives_kernel_sigkill(engine_name: str, engine: Engine,
                                                    test_image: str) -> None:
    name = f"keep-{secrets.token_hex(4)}"
    try:
        with running_kernel() as (km, kc):
            run = execute(kc, f"%sandbox start --persistent --name {name}")
            assert run.status == "ok" and "running" in run.stream()
            code = "open('/root/state.txt', 'w').write('written before the kill'); kept = 1"
            assert execute(kc, code).status == "ok"
            kc.execute("import time; time.sleep(1000)")
            time.sleep(0.5)
            os.kill(kernel_pid(km), signal.SIGKILL)
            wait_until(lambda: not km.is_alive(), 15, "the kernel dying")
        time.sleep(2)  # time enough for an ephemeral sandbox to go (test_kernel measures <1 s)
        (container,) = labelled(engine, name)
        assert container.state == "running", container
        with running_kernel() as (_km, kc):
            run = execute(kc, f"%sandbox connect {name}")
            assert run.status == "ok" and name in run.stream()
            assert execute(kc, "open('/root/state.txt').read()").result == {
                "text/plain": "'written before the kill'"}
            assert execute(kc, "'kept' in globals()").result == {"text/plain": "False"}, (
                "a reconnected sandbox keeps its files, not the dead kernel's variables")
    finally:
        for found in labelled(engine, name):
            engine.remove_container(found.id)
    assert labelled(engine, name) == []


# -- faults while a cell runs ----------------------------------------------------------------------
SLEEPER = f"import time\nprint({MARKER!r}, flush=True)\ntime.sleep(100)"
# The crashing cells wait this long after MARKER before the fault, so MARKER gets out first
# (an allocation holds the GIL, which the runner's output thread needs).
CRASH_DELAY = 0.3
FAULTS = {
    # name: (cell, injected from the test at MARKER, fragments of the error, seconds to discount)
    "container-killed": (SLEEPER, "kill", ("sandbox stopped", "killed"), 0.0),
    "out-of-memory": (
        f"import time\nprint({MARKER!r}, flush=True)\ntime.sleep({CRASH_DELAY})\n"
        "blob = b'x' * (400 * 2**20)",
        None, ("out of memory (limit 200 MB)",), CRASH_DELAY,
    ),
    "runner-sigkill": (
        f"import os, time\nprint({MARKER!r}, flush=True)\ntime.sleep({CRASH_DELAY})\n"
        "os.kill(os.getpid(), 9)",
        None, ("runner was killed by SIGKILL",), CRASH_DELAY,
    ),
    "runner-exit": (
        f"import os, time\nprint({MARKER!r}, flush=True)\ntime.sleep({CRASH_DELAY})\nos._exit(3)",
        None, ("runner exited with code 3",), CRASH_DELAY,
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_while_a_cell_runs(engine_name: str, engine: Engine, kc: BlockingKernelClient,
                                 kernel: tuple[KernelManager, BlockingKernelClient],
                                 fault: str) -> None:
    code, inject, fragments, discount = FAULTS[fault]
    if fault == "out-of-memory":
        assert execute(kc, "%sandbox start --memory 200").status == "ok"
    container = kernel_containers(engine, kernel[0])[0]["Id"]
    action = (lambda: engine.api.kill(container)) if inject == "kill" else None
    try:
        run, took = run_with_fault(kc, code, action)
        took -= discount
        print(f"\n[{engine_name}] {fault}: cell ended with the cause {took:.2f} s after the fault")
        one_line_error(run, *fragments, RESTART_HINT)
        assert took < DETECT_WITHIN, f"{fault} took {took:.2f} s to show"
        assert execute(kc, "1").status == "error", "a dead sandbox says so until restarted"
        recovers(kc)
    finally:
        if fault == "out-of-memory":
            assert execute(kc, "%sandbox start --memory 512").status == "ok"


# -- the engine itself goes away -------------------------------------------------------------------
@pytest.fixture
def engine_control(engine_name: str, engine: Engine) -> Iterator[DockerDaemon | PodmanService]:
    """Docker: the host's dockerd. Podman: a service of this test's own (see PodmanService).
    Whatever happens, the engine answers again afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="ak-engine-", dir="/tmp"))  # short: a socket path
    control: DockerDaemon | PodmanService
    control = DockerDaemon(engine) if engine_name == "docker" else PodmanService(folder)
    try:
        if isinstance(control, PodmanService):
            control.start()
        yield control
    finally:
        control.close()
        shutil.rmtree(folder, ignore_errors=True)
        assert engine.ping() and isinstance(engine.api.containers(), list), (
            "the engine fixture's client must work after the restart")


def test_engine_restart_idle_and_mid_cell(engine_name: str, engine: Engine, test_image: str,
                                          engine_control: DockerDaemon | PodmanService) -> None:
    with running_kernel(env=engine_control.env) as (km, kc):
        assert execute(kc, "1").status == "ok"
        before = proc_stats(kernel_pid(km))
        engine_control.signal_stop()
        engine_control.wait_stopped()
        started = time.monotonic()
        idle = execute(kc, "1", timeout=60)
        print(f"\n[{engine_name}] engine stopped while idle: next cell failed in "
              f"{time.monotonic() - started:.2f} s: {idle.error and idle.error['evalue']}")
        one_line_error(idle, "sandbox", RESTART_HINT)
        engine_control.start()
        recovers(kc)

        run, took = run_with_fault(kc, SLEEPER, engine_control.signal_stop)
        print(f"[{engine_name}] engine stopped mid-cell: cell ended {took:.2f} s later: "
              f"{run.error and run.error['evalue']}")
        one_line_error(run, "sandbox", RESTART_HINT)
        assert took < DETECT_WITHIN
        engine_control.wait_stopped()
        engine_control.start()
        recovers(kc)
        after = proc_stats(kernel_pid(km))
        print(f"[{engine_name}] kernel before: {before}; after two engine restarts: {after}")
        assert after.threads <= before.threads + 2, "no threads may be left behind"


# -- processes, disk, output -----------------------------------------------------------------------
PYTHON_FORK_LOOP = """import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
except OSError as exc:
    refused = exc
(children, refused.errno)
"""
PIDS_CURRENT = ("open('/sys/fs/cgroup/pids/pids.current' if os.path.exists("
                "'/sys/fs/cgroup/pids') else '/sys/fs/cgroup/pids.current').read().strip()")


def test_fork_bombs_stop_at_the_pids_limit(engine_name: str, kc: BlockingKernelClient) -> None:
    # Memory for 500 forked copies of the runner (an IPython process: about 1 MB of private
    # memory each), so that the pids limit, not the memory limit, ends the loop.
    assert execute(kc, "%sandbox resize 1 1024").status == "ok"
    run = execute(kc, PYTHON_FORK_LOOP, timeout=120)
    children, errno = ast.literal_eval(run.result["text/plain"])
    assert errno == 11 and 400 < children < 512, (children, errno)  # EAGAIN at the 512 limit
    started = time.monotonic()
    assert execute(kc, "1 + 1", timeout=30).result == {"text/plain": "2"}
    print(f"\n[{engine_name}] python fork loop: {children} children, then EAGAIN; "
          f"1 + 1 answered in {time.monotonic() - started:.2f} s")
    recovers(kc)

    # In its own session: a bomb started with ``!`` gets SIGHUP when IPython closes the pty
    # that ``!`` runs in (as on a local kernel), and would be gone before it is measured.
    bomb = ("import subprocess\n"
            "subprocess.Popen(['bash', '-c', ':(){ :|:& };:'], start_new_session=True);")
    assert execute(kc, bomb, timeout=60).status == "ok"
    time.sleep(2)
    started = time.monotonic()
    assert execute(kc, "1 + 1", timeout=30).result == {"text/plain": "2"}
    answered = time.monotonic() - started
    pids = execute(kc, f"import os; {PIDS_CURRENT}").result["text/plain"]
    print(f"[{engine_name}] shell fork bomb: {pids} pids in the sandbox; 1 + 1 answered in "
          f"{answered:.2f} s")
    assert answered < 5 and int(pids.strip("'")) >= 450
    recovers(kc)


DISK_FILLER = """written = 0
block = b"z" * (1 << 20)
with open("/tmp/fill.bin", "wb", buffering=0) as out:
    while True:
        out.write(block)
        written += 1
"""


def test_full_tmpfs_is_an_oserror(engine_name: str, test_image: str) -> None:
    with running_kernel() as (_km, kc):
        assert execute(kc, "%sandbox start --profile restrictive").status == "ok"
        run = execute(kc, DISK_FILLER, timeout=120)
        assert run.status == "error" and run.error["ename"] == "OSError", run.messages
        assert "No space left on device" in run.error["evalue"]
        written = int(execute(kc, "written").result["text/plain"])
        print(f"\n[{engine_name}] /tmp full after {written} MB: {run.error['evalue']}")
        assert abs(written - tmpfs_mb(256)) <= 2
        assert execute(kc, "import os; os.remove('/tmp/fill.bin'); 1 + 1").result == {
            "text/plain": "2"}
        recovers(kc)


FLOOD = """import sys
line = "x" * 1023 + "\\n"
print({marker!r}, flush=True)
for _ in range({mb} * 1024):
    sys.stdout.write(line)
"""


def test_gigabyte_print_keeps_kernel_memory_bounded(
        engine_name: str, kc: BlockingKernelClient,
        kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    pid = kernel_pid(kernel[0])
    seen = {"bytes": 0, "messages": 0}

    def count(msg: dict) -> None:
        if msg["msg_type"] == "stream" and MARKER not in msg["content"]["text"]:
            seen["bytes"] += len(msg["content"]["text"])
            seen["messages"] += 1

    before = proc_stats(pid)
    started = time.monotonic()
    reply = kc.execute_interactive(FLOOD.format(marker=MARKER, mb=FLOOD_MB), output_hook=count,
                                   timeout=280)
    took = time.monotonic() - started
    after = proc_stats(pid)
    total = FLOOD_MB * 2**20
    print(f"\n[{engine_name}] {FLOOD_MB} MB printed in {took:.1f} s; the client got "
          f"{seen['bytes'] / total:.0%} in {seen['messages']} messages; kernel before: {before}; "
          f"after: {after}")
    assert reply["content"]["status"] == "ok"
    assert after.peak_rss_mb < PEAK_RSS_LIMIT_MB
    assert seen["bytes"] <= total and seen["messages"] <= max(1, seen["bytes"]) / (16 * 1024)
    started = time.monotonic()
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}
    assert time.monotonic() - started < 2


def test_flood_to_a_client_that_reads_nothing(
        engine_name: str, kc: BlockingKernelClient,
        kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    """Jupyter's convention: the server reads iopub and rate-limits it; a client that does not
    read loses messages at ZeroMQ's high-water mark. The kernel must not pile them up."""
    pid = kernel_pid(kernel[0])
    code = f"import os\nblock = b'y' * (1 << 20)\nfor _ in range({SILENT_FLOOD_MB}):\n" \
           "    os.write(1, block)"
    kc.execute(code)
    reply = kc.get_shell_msg(timeout=280)
    assert reply["content"]["status"] == "ok"
    stats = proc_stats(pid)
    drained = 0
    while True:  # throw away what queued up, so the next tests see their own messages
        try:
            kc.get_iopub_msg(timeout=1)
            drained += 1
        except queue.Empty:
            break
    print(f"\n[{engine_name}] {SILENT_FLOOD_MB} MB to a client reading nothing: kernel {stats}; "
          f"{drained} messages were still queued")
    assert stats.peak_rss_mb < PEAK_RSS_LIMIT_MB
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}


def test_interrupt_stops_an_endless_flood(engine_name: str, kc: BlockingKernelClient,
                                          kernel: tuple[KernelManager,
                                                              BlockingKernelClient]) -> None:
    pid = kernel_pid(kernel[0])
    sent: list[float] = []

    def interrupt_soon() -> None:
        def fire() -> None:  # what KernelManager.interrupt_kernel does (interrupt_mode signal)
            sent.append(time.monotonic())
            os.kill(pid, signal.SIGINT)
        threading.Timer(1.0, fire).start()

    code = FLOOD.format(marker=MARKER, mb=10**9)  # never ends by itself
    run, _ = run_with_fault(kc, code, interrupt_soon, timeout=120)
    took = time.monotonic() - sent[0]
    print(f"\n[{engine_name}] endless flood interrupted: reply {took:.2f} s after the interrupt")
    assert run.reply["content"]["ename"] == "KeyboardInterrupt"
    assert took < DETECT_WITHIN, "the backlog between runner and kernel must stay small"
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}


def test_odd_bytes_are_delivered_or_replaced(kc: BlockingKernelClient) -> None:
    code = ("import os, sys\nos.write(1, b'\\xff\\xfe\\x00\\x1b[31mred\\x1b[0m\\n')\n"
            "os.write(2, b'half \\xe2\\x82')\nsys.stdout.write('lone \\udc80 surrogate\\n')\n"
            "print('\\x07bell \\r\\x1b]0;title\\x07')")
    run = execute(kc, code)
    assert run.status == "ok", run.messages
    # colours stay; the title escape (OSC) never reaches the page (termtext.py)
    assert run.stream() == ("\ufffd\ufffd\x00\x1b[31mred\x1b[0m\n"
                            "lone \\udc80 surrogate\n\x07bell \r\n")
    assert run.stream("stderr") == "half \ufffd"
    assert execute(kc, "'after'").result == {"text/plain": "'after'"}


# -- many cells, and a name taken twice ------------------------------------------------------------
def soak_cell(i: int) -> str:
    """Cell ``i`` of the soak: pass, prints, results, state, an error every 100th."""
    if i % 100 == 99:
        return "1 / 0"
    return ("pass", f"print({i})", f"{i} * 2", f"state = list(range({i % 50}))")[i % 4]


def test_soak_five_thousand_cells() -> None:
    engine = get_engine(SOAK_ENGINE)
    assert engine.image_present(TEST_IMAGE), f"{TEST_IMAGE} missing in {SOAK_ENGINE}"
    env = {"AGENTKERNEL_ENGINE": SOAK_ENGINE, "AGENTKERNEL_IMAGE": TEST_IMAGE}
    with running_kernel(env=env) as (km, kc):
        pid = kernel_pid(km)
        owner = f"{LABEL_OWNER}={socket.gethostname()}:{pid}"
        for i in range(200):  # warm up: imports, caches, first allocations
            execute(kc, soak_cell(i))
        time.sleep(1)
        before = proc_stats(pid)
        started = time.monotonic()
        errors = 0
        for i in range(SOAK_CELLS):
            run = execute(kc, soak_cell(i))
            errors += run.status == "error"
            if i % 4 == 1 and i % 100 != 99:
                assert run.stream() == f"{i}\n", (i, run.messages)
        took = time.monotonic() - started
        time.sleep(1)
        after = proc_stats(pid)
        print(f"\n[{SOAK_ENGINE}] {SOAK_CELLS} cells in {took:.1f} s "
              f"({took / SOAK_CELLS * 1000:.1f} ms each); kernel before: {before}; "
              f"after: {after}")
        assert errors == SOAK_CELLS // 100
        assert after.rss_mb - before.rss_mb < 50
        assert after.fds - before.fds <= 5
        assert after.threads - before.threads <= 2
    wait_until(lambda: not engine.api.containers(all=True, filters={"label": owner}), 15,
             "the soak kernel's sandbox going")


def test_same_name_in_two_kernels(engine_name: str, engine: Engine, test_image: str) -> None:
    name = f"twin-{secrets.token_hex(4)}"
    with running_kernel() as (_a, first), running_kernel() as (_b, second):
        assert execute(first, f"%sandbox start --name {name}").status == "ok"
        assert execute(first, "mine = 'first'").status == "ok"
        (original,) = labelled(engine, name)
        run = execute(second, f"%sandbox start --name {name}")
        one_line_error(run, f"a sandbox named {name!r} already exists", "--name")
        (still,) = labelled(engine, name)
        assert still.id == original.id and still.state == "running"
        assert execute(first, "mine").result == {"text/plain": "'first'"}
        assert execute(second, "1 + 1").result == {"text/plain": "2"}, (
            "the second kernel goes on with a sandbox of its own")


# -- the host session under a flood, without an engine -------------------------------------------
class FloodTransport:
    """A runner that answers the first request with ``frames`` stream frames of ``size``
    characters, then ``done``; it counts the bytes the session has read so far."""

    def __init__(self, frames: int, size: int):
        from agentkernel.runner.runner import encode_frame

        self._encode = encode_frame
        self._left, self._text = frames, "f" * (size - 1) + "\n"
        self.read_bytes = 0
        self._asked = threading.Event()
        self._done = False

    def write(self, data: bytes) -> None:
        self._asked.set()

    def read(self) -> bytes:
        if self.read_bytes == 0:
            data = self._encode({"type": "ready", "python": "3", "pid": 1})
        elif not self._asked.wait(10) or self._done:
            return b""
        elif self._left:
            self._left -= 1
            data = self._encode({"type": "stream", "id": "1", "name": "stdout",
                                 "text": self._text})
        else:
            self._done = True
            data = self._encode({"type": "done", "id": "1", "status": "ok",
                                 "execution_count": 1})
        self.read_bytes += len(data)
        return data

    def close(self) -> None:
        self._asked.set()


def test_session_reads_no_further_ahead_than_its_inbox_limit() -> None:
    """Backpressure: with a slow consumer the reader stops reading; queued output is handed
    over merged, in events of up to STREAM_MERGE_LIMIT characters."""
    frame_size = 64 * 1024
    transport = FloodTransport(frames=1024, size=frame_size)  # 64 MiB
    session = RunnerSession(transport)
    session.wait_ready(10)
    consumed = 0
    ahead: list[int] = []
    sizes: list[int] = []

    def slow(event: dict) -> None:
        nonlocal consumed
        consumed += len(event["text"])
        sizes.append(len(event["text"]))
        ahead.append(transport.read_bytes - consumed)
        time.sleep(0.002)

    try:
        assert session.execute("flood", on_event=slow, timeout=60)["status"] == "ok"
    finally:
        session.close()
    assert consumed == 1024 * frame_size
    assert max(ahead) <= INBOX_LIMIT + STREAM_MERGE_LIMIT + 4 * frame_size, max(ahead)
    assert max(sizes) == STREAM_MERGE_LIMIT and len(sizes) < 1024 / 2, (max(sizes), len(sizes))
    with pytest.raises(RunnerGone):
        session.execute("after close", on_event=slow, timeout=5)
