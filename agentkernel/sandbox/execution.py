"""Running commands in a sandbox: streams, results, timeouts."""

from __future__ import annotations

import codecs
import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..engine import ExecStream
from ..engine.base import STDERR, STDOUT
from ..errors import ConfigError, ExecTimeout, SandboxError, SandboxNotRunning, one_line
from .core import SandboxCore

OutputCallback = Callable[[str], None]
FEED_CHUNK = 1 << 20
EXIT_CODE_POLLS = 50
KILL_GRACE_S = 0.5


@dataclass
class ExecResult:
    """What a finished command returned."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Execution(SandboxCore):
    """exec (buffered or streamed, with a timeout) and raw exec streams."""

    def open_exec(self, cmd: Sequence[str], *, workdir: str | None = None,
                  user: str | None = None, env: Mapping[str, str] | None = None,
                  stdin: bool = True, tty: bool = False) -> ExecStream:
        """Start ``cmd`` with a raw two-way stream (the runner session, the shell)."""
        with self._errors(f"starting {list(cmd)[:3]} in sandbox {self.name}"):
            return self.engine.open_exec(
                self.container_id, list(cmd), workdir=workdir,
                user=user or self.effective.user, env=env, stdin=stdin, tty=tty,
            )

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        workdir: str | None = None,
        user: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> ExecResult:
        """Run ``cmd`` (a shell string or an argv list) and wait for it.

        With ``on_stdout`` / ``on_stderr`` the output is streamed to the callbacks as it is
        produced (and not kept in the result). A timeout kills the command and raises
        ExecTimeout.
        """
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if not argv:
            raise ConfigError("exec needs a command: got an empty one")
        marker = secrets.token_hex(8)
        env = {**(env or {}), "AGENTKERNEL_EXEC": marker}
        stream = self.open_exec(argv, workdir=workdir, user=user, env=env, stdin=stdin is not None)
        timer = None
        timed_out = threading.Event()
        if timeout is not None:
            timer = threading.Timer(timeout, self._kill_exec, (marker, stream, timed_out))
            timer.daemon = True
            timer.start()
        if stdin is not None:
            data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
            threading.Thread(target=_feed, args=(stream, data), daemon=True).start()
        try:
            out, err = _collect(stream, on_stdout, on_stderr)
            code = _exit_code(stream)
        finally:
            if timer is not None:
                timer.cancel()
            stream.close()
        if timed_out.is_set():
            raise ExecTimeout(
                f"command {one_line(cmd, 80)!r} timed out after {timeout:g} s and was killed",
                result=ExecResult(code if code is not None else -9, out, err),
            )
        if code is None:
            reason = self.death_reason()
            if reason:
                raise SandboxNotRunning(f"sandbox {self.name} stopped during exec: {reason}")
            code = -1
        return ExecResult(code, out, err)

    def _exec_bytes(self, argv: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run argv, returning (exit code, stdout bytes, stderr bytes) undecoded."""
        stream = self.open_exec(argv, stdin=stdin is not None)
        if stdin is not None:
            threading.Thread(target=_feed, args=(stream, stdin), daemon=True).start()
        chunks: dict[int, list[bytes]] = {STDOUT: [], STDERR: []}
        try:
            while (frame := stream.read_frame()) is not None:
                chunks.setdefault(frame[0], []).append(frame[1])
            code = _exit_code(stream)
        finally:
            stream.close()
        return (-1 if code is None else code), b"".join(chunks[STDOUT]), b"".join(chunks[STDERR])

    def _kill_exec(self, marker: str, stream: ExecStream, flag: threading.Event) -> None:
        """Kill every process of one exec (found by its marker variable), then its stream."""
        flag.set()
        script = (
            'for d in /proc/[0-9]*; do '
            f'if tr "\\0" "\\n" < "$d/environ" 2>/dev/null | grep -qx "AGENTKERNEL_EXEC={marker}";'
            ' then kill -9 "${d#/proc/}" 2>/dev/null; fi; done'
        )
        with contextlib.suppress(Exception):
            killer = self.engine.open_exec(self.container_id, ["/bin/sh", "-c", script],
                                           user="0", stdin=False)
            while killer.read_frame() is not None:
                pass
            killer.close()
        time.sleep(KILL_GRACE_S)
        stream.close()


def _feed(stream: ExecStream, data: bytes) -> None:
    """Write ``data`` to the command's stdin, then close it."""
    try:
        for start in range(0, len(data), FEED_CHUNK):
            stream.write(data[start : start + FEED_CHUNK])
    except OSError:
        pass
    stream.close_stdin()


def _collect(stream: ExecStream, on_stdout: OutputCallback | None,
             on_stderr: OutputCallback | None) -> tuple[str, str]:
    """Decode the command's output as it comes: to the callbacks, or kept and returned."""
    decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in (STDOUT, STDERR)}
    sinks = {STDOUT: on_stdout, STDERR: on_stderr}
    kept: dict[int, list[str]] = {STDOUT: [], STDERR: []}

    def emit(which: int, text: str) -> None:
        if text:
            sink = sinks[which]
            sink(text) if sink else kept[which].append(text)

    while (frame := stream.read_frame()) is not None:
        which, payload = frame
        if which in decoders:
            emit(which, decoders[which].decode(payload))
    for which, decoder in decoders.items():
        emit(which, decoder.decode(b"", final=True))
    return "".join(kept[STDOUT]), "".join(kept[STDERR])


def _exit_code(stream: ExecStream) -> int | None:
    """The command's exit code, once the engine has recorded it (None if it cannot tell)."""
    for _ in range(EXIT_CODE_POLLS):
        try:
            code = stream.exit_code()
        except SandboxError:
            return None
        if code is not None:
            return code
        time.sleep(0.02)
    return None
