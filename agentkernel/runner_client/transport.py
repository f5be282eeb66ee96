"""The byte pipe to a runner: what a session needs of it, and a local subprocess that is one.

In a sandbox the pipe is the engine's exec or attach stream (``agentkernel.engine.ExecStream``);
:class:`LocalProcessTransport` runs the runner on this host, for tests and debugging.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Protocol

from .command import runner_source

READ_SIZE = 256 * 1024
STDERR_TAIL = 4096  # bytes of the runner's stderr kept for error messages


class RunnerTransport(Protocol):
    """A byte pipe to a runner. Implementations may also offer ``stderr_tail() -> str``."""

    def write(self, data: bytes) -> None:
        """Send all of ``data`` to the runner's stdin."""

    def read(self) -> bytes:
        """Block for the next bytes of the runner's stdout; b"" at end of file."""

    def close(self) -> None:
        """Release the pipe (and whatever runs the runner)."""


class LocalProcessTransport:
    """Runs ``<python> -u -c <runner>`` as a subprocess with pipes: for tests and debugging.

    ``python`` is an interpreter path or a command prefix, such as
    ``["docker", "run", "--rm", "-i", IMAGE, "python3"]``; ``bundle`` is where that
    interpreter finds agentkernel's IPython, if it needs it. The process gets its own session,
    so a Ctrl-C on the host's terminal does not reach it.
    """

    def __init__(
        self,
        python: str | Sequence[str] = sys.executable,
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        bundle: str | None = None,
    ) -> None:
        prefix = [python] if isinstance(python, str) else list(python)
        self._proc = subprocess.Popen(
            [*prefix, "-u", "-c", runner_source(), *([bundle] if bundle else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._stderr = bytearray()
        self._stderr_reader = threading.Thread(
            target=self._collect_stderr, name="agentkernel-local-stderr", daemon=True
        )
        self._stderr_reader.start()

    def write(self, data: bytes) -> None:
        """Send all of ``data`` to the runner's stdin."""
        view = memoryview(data)
        while view:
            view = view[self._proc.stdin.write(view) :]

    def read(self) -> bytes:
        """Next bytes of the runner's stdout; b"" at end of file."""
        return self._proc.stdout.read(READ_SIZE)

    def close(self) -> None:
        """Close stdin, give the runner 2 s to exit, then kill it."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        self._stderr_reader.join(timeout=1)

    def stderr_tail(self) -> str:
        """The last few KiB the runner wrote to its original stderr."""
        if self._proc.poll() is not None:
            self._stderr_reader.join(timeout=0.5)
        return self._stderr.decode("utf-8", "replace")

    def _collect_stderr(self) -> None:
        while chunk := self._proc.stderr.read(STDERR_TAIL):
            self._stderr += chunk
            del self._stderr[:-STDERR_TAIL]
        self._proc.stderr.close()
