"""Helpers to drive the real AgentKernel Sandbox kernel through jupyter_client."""

from __future__ import annotations

import os
import queue
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from agentkernel.sandbox import LABEL_OWNER

KERNEL_NAME = "agentkernel"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(lines: list[str]) -> str:
    """IPython's traceback or pager lines without their colours."""
    return ANSI.sub("", "\n".join(lines))


def install_kernelspec(prefix: Path) -> None:
    """Install the kernelspec under ``prefix`` and put it first on JUPYTER_PATH."""
    from agentkernel_kernel.kernelspec import install

    install(prefix=str(prefix))
    data = prefix / "share" / "jupyter"
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(data)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    )


@dataclass
class Run:
    """What one execute produced: its reply and iopub messages."""

    reply: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.reply["content"]["status"]

    def of(self, msg_type: str) -> list[dict[str, Any]]:
        return [m["content"] for m in self.messages if m["msg_type"] == msg_type]

    def stream(self, name: str = "stdout") -> str:
        return "".join(c["text"] for c in self.of("stream") if c["name"] == name)

    @property
    def result(self) -> dict[str, Any] | None:
        results = self.of("execute_result")
        return results[0]["data"] if results else None

    @property
    def error(self) -> dict[str, Any] | None:
        errors = self.of("error")
        return errors[0] if errors else None

    @property
    def displays(self) -> list[dict[str, Any]]:
        return [c["data"] for c in self.of("display_data")]


def execute(kc: BlockingKernelClient, code: str, timeout: float = 120, **kwargs: Any) -> Run:
    """Run ``code`` and collect everything until the kernel is idle again."""
    messages: list[dict[str, Any]] = []
    stamps: list[float] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] not in ("status", "execute_input"):
            messages.append(msg)
            stamps.append(time.monotonic())

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout, **kwargs)
    return Run(reply, messages, stamps)


@contextmanager
def running_kernel(
    env: dict[str, str] | None = None, startup_timeout: float = 120,
    kernel_name: str = KERNEL_NAME, cwd: str | os.PathLike[str] | None = None,
) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """Start the kernel (a real process, in folder ``cwd``: its notebook's folder), yield its
    manager and a ready client, shut it down."""
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel(env={**os.environ, **(env or {})}, **({"cwd": str(cwd)} if cwd else {}))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=startup_timeout)
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def interrupt_running(km: KernelManager, kc: BlockingKernelClient, msg_id: str) -> float:
    """Interrupt the cell ``msg_id`` (running now); check it ended in KeyboardInterrupt within
    2 s and return the seconds it took."""
    sent = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=30)
    took = time.monotonic() - sent
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert took < 2.0, f"interrupt took {took:.2f} s"
    return took


def wait_until(predicate: Any, timeout: float, what: str = "condition",
               step: float = 0.1) -> float:
    """Seconds until ``predicate()`` held; AssertionError naming ``what`` if it never did."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s")


def kernel_containers(engine: Any, km: KernelManager | int,
                      running_only: bool = True) -> list[dict]:
    """Containers owned by the kernel process of ``km`` (or that pid)."""
    pid = km if isinstance(km, int) else km.provisioner.process.pid
    owner = f"{socket.gethostname()}:{pid}"
    return engine.api.containers(all=not running_only,
                                 filters={"label": f"{LABEL_OWNER}={owner}"})


def wait_for_iopub(kc: BlockingKernelClient, msg_type: str,
                   timeout: float = 30) -> dict[str, Any]:
    """The next iopub message of ``msg_type`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            break
        if msg["msg_type"] == msg_type:
            return msg
    raise AssertionError(f"no {msg_type} message on iopub within {timeout} s")


def drain(q_get, seconds: float = 0.2) -> list[dict[str, Any]]:
    """Whatever arrives on a channel within ``seconds``."""
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found.append(q_get(timeout=0.05))
        except queue.Empty:
            pass
    return found
