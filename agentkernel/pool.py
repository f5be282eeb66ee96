"""A warm pool: sandboxes started ahead of time, each with its runner up and ready.

The pool lives in the process that launches kernels (Jupyter server, papermill, nbclient), through
the kernel provisioner in ``agentkernel_kernel.provisioner``. Handing a warm sandbox to a kernel
means passing two sockets to the kernel process: the container's stdin lifeline and the runner's
stream (a second fd on the lifeline's connection when the runner is the container's main process,
an exec's otherwise). The pool then closes its copies, so the container lives exactly as long as
that kernel. A sandbox is handed out once and never returns to the pool. The kernel reaches the
engine as this process does (``Engine.endpoint()``: URL and TLS files). With a remote engine over
TLS or SSH the runner stream (and over SSH the lifeline) is a local socket relayed by this process
(see ``engine/relay.py``), so those kernels rely on it staying up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from .config import SandboxConfig
from .engine import Endpoint, Engine, ExecStream, connect
from .engine.deferred import DeferredEngine
from .errors import SandboxError
from .runner_client import launch_runner, runner_main_command
from .sandbox import Sandbox

log = logging.getLogger(__name__)

POOL_LABEL = "agentkernel.pool"
MAX_POOL_SIZE = 8
REFILL_DELAY_S = 3.0  # after a take, before the replacement starts (the new kernel starts first)


@dataclass
class WarmSandbox:
    """A started sandbox whose runner has said ``ready`` and nothing else."""

    sandbox: Sandbox
    stream: ExecStream
    ready: dict[str, Any]

    def handoff(self) -> tuple[dict[str, Any], list[int]]:
        """The description a kernel process needs, and the fds it must inherit; SandboxError
        when one of them is closed already (the sandbox cannot be handed over)."""
        sandbox = self.sandbox
        lifeline, reaper_fd = sandbox.lifeline_fds()
        runner = self.stream.fileno()
        if min(lifeline, reaper_fd, runner) < 0:
            raise SandboxError(f"warm sandbox {sandbox.name} lost a socket (lifeline fd "
                               f"{lifeline}, reaper fd {reaper_fd}, runner fd {runner})")
        description = {
            "engine": sandbox.engine.kind,
            "endpoint": sandbox.engine.endpoint().to_dict(),
            "container_id": sandbox.container_id,
            "exec_id": self.stream.exec_id,
            "lifeline_fd": lifeline,
            "reaper_fd": reaper_fd,
            "runner_fd": runner,
            "ready": self.ready,
            "config": {**sandbox.config.values(), "name": sandbox.name},
            "notes": list(sandbox.notes),
        }
        return description, [lifeline, reaper_fd, runner]

    def release(self) -> None:
        """Close this process's copies of the sockets (after the kernel inherited them)."""
        self.stream.forget()
        self.sandbox.detach()

    def discard(self) -> None:
        """Remove the container (a warm sandbox nobody will take)."""
        with contextlib.suppress(Exception):
            self.stream.close()
        self.sandbox.stop()


def start_warm(config: SandboxConfig, engine: Engine | None = None) -> WarmSandbox:
    """Start a sandbox and its runner, and wait for the runner's ``ready`` frame."""
    labels = {**config.labels, POOL_LABEL: "warm"}
    sandbox = Sandbox(config.copy(labels=labels, name=None), engine=engine).start(
        ipython=True, main=runner_main_command())
    try:
        stream, ready = launch_runner(sandbox)
    except SandboxError as err:
        sandbox.stop()
        raise SandboxError(f"warm sandbox failed to start its runner: {err}") from None
    return WarmSandbox(sandbox, stream, ready)


class WarmPool:
    """Keeps ``size`` warm sandboxes of one configuration; ``take()`` hands one out."""

    def __init__(self, size: int, config: SandboxConfig | None = None,
                 engine_kind: str = "auto"):
        if not 0 <= size <= MAX_POOL_SIZE:
            raise SandboxError(f"invalid pool size {size}: accepted 0 to {MAX_POOL_SIZE}")
        self.size = size
        self.config = config or SandboxConfig()
        self.engine = connect(engine_kind)
        self._ready: list[WarmSandbox] = []
        self._starting = 0
        self._closed = False
        self._lock = threading.Condition()
        self.refill()

    def refill(self, delay: float = 0.0) -> None:
        """Start sandboxes in the background, ``delay`` seconds from now, until ``size`` are
        ready or starting."""
        with self._lock:
            missing = self.size - len(self._ready) - self._starting
            if self._closed or missing <= 0:
                return
            self._starting += missing
        for _ in range(missing):
            threading.Thread(target=self._start_one, args=(delay,), name="agentkernel-pool",
                             daemon=True).start()

    def _start_one(self, delay: float = 0.0) -> None:
        warm = None
        time.sleep(delay)
        try:
            if not self._closed:
                warm = start_warm(self.config, self.engine)
        except SandboxError as err:
            log.warning("warm pool: %s", err)
        with self._lock:
            self._starting -= 1
            if warm is not None and not self._closed:
                self._ready.append(warm)
                warm = None
            self._lock.notify_all()
        if warm is not None:
            warm.discard()

    def take(self, timeout: float = 0.0) -> WarmSandbox | None:
        """A warm sandbox (waiting up to ``timeout`` s for one being started), or None."""
        with self._lock:
            if not self._ready and self._starting and timeout > 0:
                self._lock.wait_for(lambda: self._ready or not self._starting, timeout)
            warm = self._ready.pop(0) if self._ready else None
        # the kernel given this sandbox starts first: a replacement would take its CPU
        self.refill(delay=REFILL_DELAY_S if warm is not None else 0.0)
        if warm is not None and not warm.sandbox.is_running:
            warm.discard()
            return None
        return warm

    def close(self) -> None:
        """Remove every warm sandbox; the pool starts no more."""
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, []
        for warm in ready:
            warm.discard()

    @property
    def available(self) -> int:
        with self._lock:
            return len(self._ready)


def adopt(description: dict[str, Any]) -> tuple[Sandbox, ExecStream, dict[str, Any]]:
    """In the kernel process: rebuild the sandbox and runner stream from inherited fds. The
    engine is connected on first use (the first reply needs only the inherited sockets)."""
    engine = cast(Engine, DeferredEngine(description["engine"],
                                         Endpoint.from_dict(description["endpoint"])))
    sandbox = Sandbox.adopt(engine, description["container_id"],
                            (description["lifeline_fd"], description["reaper_fd"]),
                            description.get("config") or {})
    stream = engine.adopt_exec(description["exec_id"], description["runner_fd"])
    return sandbox, stream, description["ready"]

