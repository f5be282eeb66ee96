"""A warm pool: sandboxes started ahead of time, each with its runner up and ready.

The pool lives in the process that launches kernels (Jupyter server, papermill, nbclient), through
the kernel provisioner in ``agentkernel_kernel.provisioner``. Handing a warm sandbox to a kernel
means passing its sockets to the kernel process (``agentkernel.handoff``, as a kernel's own start
process does): the container's stdin lifeline, the reaper's pipe and the runner's stream. The
pool then closes its copies, so the container lives exactly as long as that kernel. A sandbox is
handed out once and never returns to the pool. The kernel reaches the engine as this process
does (``Engine.endpoint()``: URL and TLS files). With a remote engine over TLS or SSH the runner
stream (and over SSH the lifeline) is a local socket relayed by this process (see
``engine/relay.py``), so those kernels rely on it staying up.
"""

from __future__ import annotations

import logging
import threading
import time

from .config import SandboxConfig
from .engine import Engine, connect
from .errors import SandboxError
from .start import StartedSandbox, start_with_runner

log = logging.getLogger(__name__)

POOL_LABEL = "agentkernel.pool"
MAX_POOL_SIZE = 8
REFILL_DELAY_S = 3.0  # after a take, before the replacement starts (the new kernel starts first)


def start_warm(config: SandboxConfig, engine: Engine | None = None) -> StartedSandbox:
    """Start a sandbox and its runner for the pool (labelled as the pool's, nameless)."""
    labels = {**config.labels, POOL_LABEL: "warm"}
    try:
        return start_with_runner(config.copy(labels=labels, name=None), engine=engine)
    except SandboxError as err:
        raise SandboxError(f"warm sandbox failed to start: {err}") from None


class WarmPool:
    """Keeps ``size`` warm sandboxes of one configuration; ``take()`` hands one out."""

    def __init__(self, size: int, config: SandboxConfig | None = None,
                 engine_kind: str = "auto"):
        if not 0 <= size <= MAX_POOL_SIZE:
            raise SandboxError(f"invalid pool size {size}: accepted 0 to {MAX_POOL_SIZE}")
        self.size = size
        self.config = config or SandboxConfig()
        self.engine = connect(engine_kind)
        self._ready: list[StartedSandbox] = []
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

    def take(self, timeout: float = 0.0) -> StartedSandbox | None:
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
