"""What every part of a Sandbox shares: its configuration, engine, container and errors."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..config import EffectiveConfig, SandboxConfig
from ..engine import ContainerGone, ContainerInfo, Engine, ExecStream, connect
from ..errors import ConfigError, SandboxError, SandboxNotRunning

log = logging.getLogger(__name__)


@dataclass
class Attachment:
    """The container a Sandbox object stands for, and what ties its life to this process: the
    lifeline socket to its main process's stdin, and the pipe to its host-side reaper (both
    None for a persistent container, or one this process does not own)."""

    container_id: str
    lifeline: socket.socket | None = None
    reaper_fd: int | None = None

    def release(self) -> None:
        """Close this process's lifeline and reaper pipe (another process may hold them)."""
        if self.lifeline is not None:
            with contextlib.suppress(OSError):
                self.lifeline.close()
            self.lifeline = None
        if self.reaper_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.reaper_fd)
            self.reaper_fd = None


def _force_remove(engine: Engine, container_id: str, attachment: Attachment) -> None:
    """Finalizer: remove an ephemeral container even if the owner forgot to stop it."""
    with contextlib.suppress(Exception):
        engine.remove_container(container_id)
    attachment.release()


class SandboxCore:
    """A sandbox's identity and state; the mixins of :class:`~agentkernel.sandbox.Sandbox`
    add what it can do."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        engine: Engine | None = None,
        attach: Attachment | None = None,
        **overrides: Any,
    ):
        if config is None:
            config = SandboxConfig(**overrides)
        elif overrides:
            config = config.copy(**overrides)
        self.config = config
        self.effective: EffectiveConfig = config.resolve()
        self.notes: list[str] = []  # what its start chose that the user should read
        self.image_id: str | None = None  # the image's id, once a start here knows it
        self._network_checked = False  # check_network() done (it may ask the engine)
        # names the copy-on-write workspace's volumes (sandbox/workspace.py): the kernel's, or
        # this sandbox's own once started
        self.workspace_id: str | None = (
            self.effective.workspace_id if self.effective.workspace else None)
        self._main_stream: ExecStream | None = None  # the main program's, until taken
        self._engine = engine
        self._attachment: Attachment | None = None
        self._finalizer: weakref.finalize | None = None
        if attach is not None:
            self._hold(attach)

    def _hold(self, attachment: Attachment) -> None:
        """Stand for this container from now on; an ephemeral one that holds its lifeline
        here is removed when this object is collected without stop()."""
        self._attachment = attachment
        if attachment.lifeline is not None:
            self._finalizer = weakref.finalize(
                self, _force_remove, self.engine, attachment.container_id, attachment)

    # -- identity ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.effective.name

    @property
    def container_name(self) -> str:
        return self.effective.container_name

    @property
    def container_id(self) -> str:
        if self._attachment is None:
            raise SandboxNotRunning(f"sandbox {self.name} is not started (call start())")
        return self._attachment.container_id

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = connect()
        return self._engine

    def __repr__(self) -> str:
        return f"<Sandbox {self.name} image={self.effective.image!r}>"

    # -- the container, as the engine sees it ------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Name this sandbox, and why it died, in the engine's "container gone" errors."""
        try:
            yield
        except ContainerGone as gone:
            reason = self.death_reason() or ("removed" if gone.removed else "stopped")
            if gone.removed:
                raise SandboxNotRunning(
                    f"sandbox {self.name} is gone while {action}: {reason}") from None
            raise SandboxNotRunning(f"sandbox {self.name} is not running: {reason}") from None

    def _inspect(self) -> ContainerInfo | None:
        return self.engine.inspect_container(self.container_id)

    @property
    def is_running(self) -> bool:
        """Asked of the engine, not remembered."""
        if self._attachment is None:
            return False
        try:
            info = self._inspect()
        except SandboxError:
            return False
        return bool(info and info.running)

    def death_reason(self) -> str | None:
        """Why the container is not running (None if it runs or was never started)."""
        if self._attachment is None:
            return None
        try:
            info = self._inspect()
        except SandboxError:
            return "the container engine is not answering"
        if info is None and not self._killed_out_of_memory():
            return "its container was removed (killed or stopped outside agentkernel)"
        if info is not None and info.running:
            return None
        if info is None or info.oom_killed:
            return f"out of memory (limit {self.effective.memory_mb} MB)"
        code = info.exit_code
        return "killed (SIGKILL)" if code == 137 else f"its container exited with code {code}"

    def _killed_out_of_memory(self) -> bool:
        """The engine's record of an out-of-memory kill (under gVisor the host kills the
        whole sandbox, and the engine removes it)."""
        try:
            return self.engine.killed_out_of_memory(self.container_id,
                                                    whole=bool(self.effective.runtime))
        except SandboxError:
            return False

    def _check_limits(self, cpus: float | None, memory_mb: int | None) -> None:
        """Refuse limits beyond what the engine's host has."""
        ncpu = self.engine.ncpu
        if cpus is not None and cpus > ncpu:
            raise ConfigError(
                f"invalid cpus {cpus:g}: the engine's host has {ncpu} CPUs "
                f"(accepted: more than 0, at most {ncpu})"
            )
        total = self.engine.mem_total_mb
        if memory_mb is not None and total and memory_mb > total:
            raise ConfigError(
                f"invalid memory {memory_mb} MB: the engine's host has {total} MB "
                f"(accepted: 6 to {total})"
            )
