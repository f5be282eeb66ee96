"""An interactive shell in a sandbox, optionally recorded as an asciicast v2 file.

The shell runs as an exec with a TTY and stdin, over the engine API's hijacked socket (raw
bytes both ways: a TTY exec has no frame headers). The local terminal is put in raw mode and
restored however the session ends; its size is sent at start and on SIGWINCH. When stdin is
not a terminal (a pipe, a test), bytes are passed through as they are, and at its end an
end-of-file key (Ctrl-D) is sent until the shell exits: half-closing the socket is no option,
since Docker then drops the whole connection, output included.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import selectors
import shutil
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from typing import Any, TextIO

from .engine import ExecStream
from .errors import SandboxError, SandboxNotRunning
from .sandbox import Sandbox

DEFAULT_TERM = "xterm-256color"
EOF_KEY = b"\x04"
EOF_REPEAT_S = 0.5
READ_SIZE = 65536


class CastWriter:
    """Writes an asciicast v2 recording: a JSON header line, then one JSON event per line.

    Events are ``[seconds, "o", text]`` for output, ``[seconds, "i", text]`` for input (typed
    input is recorded, passwords included) and ``[seconds, "r", "COLSxROWS"]`` for resizes.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, *,
                 shell: str, term: str, title: str):
        self._file: TextIO = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._start = time.monotonic()
        self._decoders = {
            kind: codecs.getincrementaldecoder("utf-8")("replace") for kind in ("o", "i")
        }
        header = {
            "version": 2, "width": width, "height": height, "timestamp": int(time.time()),
            "env": {"SHELL": shell, "TERM": term}, "title": title,
        }
        self._file.write(json.dumps(header) + "\n")

    def _event(self, kind: str, text: str) -> None:
        """One event line, timed from the start of the recording."""
        elapsed = round(time.monotonic() - self._start, 6)
        self._file.write(json.dumps([elapsed, kind, text], ensure_ascii=False) + "\n")

    def output(self, data: bytes) -> None:
        """Record bytes the shell wrote."""
        self._bytes("o", data)

    def input(self, data: bytes) -> None:
        """Record bytes sent to the shell."""
        self._bytes("i", data)

    def resize(self, width: int, height: int) -> None:
        """Record a window size change."""
        self._event("r", f"{width}x{height}")

    def _bytes(self, kind: str, data: bytes, final: bool = False) -> None:
        """Decode incrementally: a UTF-8 sequence split across reads stays whole."""
        text = self._decoders[kind].decode(data, final=final)
        if text:
            self._event(kind, text)

    def close(self) -> None:
        """Flush partial UTF-8 sequences and close the file."""
        for kind in self._decoders:
            self._bytes(kind, b"", final=True)
        self._file.close()


def default_shell(sandbox: Sandbox) -> str:
    """``/bin/bash`` when the sandbox has it, else ``/bin/sh``."""
    return "/bin/bash" if sandbox.exec(["test", "-x", "/bin/bash"]).ok else "/bin/sh"


def terminal_size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal at ``fd``; else $COLUMNS/$LINES, else 80x24."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        size = shutil.get_terminal_size()
    return size.columns, size.lines


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Put the terminal at ``fd`` in raw mode (no-op for a non-terminal); always restore it."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSADRAIN)  # keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def winch_pipe(active: bool) -> Iterator[int | None]:
    """A pipe that gets a byte on each SIGWINCH (None when not ``active``); handler restored."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield None
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def on_winch(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(write_fd, b"w")

    previous = signal.signal(signal.SIGWINCH, on_winch)
    try:
        yield read_fd
    finally:
        signal.signal(signal.SIGWINCH, previous)
        os.close(read_fd)
        os.close(write_fd)


class _Session:
    """One shell exec: moves bytes between the local fds and the exec's stream."""

    def __init__(self, stream: ExecStream, recorder: CastWriter | None):
        self.stream = stream
        self.recorder = recorder
        self.stdin_open = True
        self.eof_sent_at = 0.0

    def resize(self, width: int, height: int, attempts: int = 1) -> None:
        """Tell the exec its window size (retried while the exec is still starting)."""
        for attempt in range(attempts):
            try:
                self.stream.resize(width, height)
                return
            except Exception:  # the engine refuses while the exec is still starting
                if attempt + 1 < attempts:
                    time.sleep(0.05)

    def _on_winch(self, winch_fd: int, tty_fd: int) -> None:
        """The local window changed: pass its size on (and record it)."""
        os.read(winch_fd, 512)
        width, height = terminal_size(tty_fd)
        self.resize(width, height)
        if self.recorder is not None:
            self.recorder.resize(width, height)

    def pump(self, stdin_fd: int, stdout_fd: int, winch_fd: int | None) -> None:
        """Copy until the shell closes its side (it exited)."""
        with selectors.PollSelector() as sel:  # poll, unlike epoll, takes regular files
            sel.register(self.stream.fileno(), selectors.EVENT_READ, "remote")
            sel.register(stdin_fd, selectors.EVENT_READ, "local")
            if winch_fd is not None:
                sel.register(winch_fd, selectors.EVENT_READ, "winch")
            while True:
                timeout = None if self.stdin_open else EOF_REPEAT_S
                for key, _ in sel.select(timeout):
                    if key.data == "remote" and not self._from_remote(stdout_fd):
                        return
                    if key.data == "local" and not self._from_local(stdin_fd):
                        sel.unregister(stdin_fd)
                    if key.data == "winch":
                        self._on_winch(key.fd, stdin_fd)
                if not self.stdin_open:
                    self._send_eof()

    def _from_remote(self, stdout_fd: int) -> bool:
        """Shell output to our stdout; False once the shell has closed its side."""
        data = self.stream.recv(READ_SIZE)
        if not data:
            return False
        _write_all(stdout_fd, data)
        if self.recorder is not None:
            self.recorder.output(data)
        return True

    def _from_local(self, stdin_fd: int) -> bool:
        """Our stdin to the shell; False at its end."""
        data = os.read(stdin_fd, READ_SIZE)
        if not data:
            self.stdin_open = False
            return False
        if self.recorder is not None:
            self.recorder.input(data)
        self._send(data)
        return True

    def _send_eof(self) -> None:
        """Press Ctrl-D (again, every EOF_REPEAT_S, until the shell has gone)."""
        now = time.monotonic()
        if now - self.eof_sent_at >= EOF_REPEAT_S:
            self.eof_sent_at = now
            self._send(EOF_KEY)

    def _send(self, data: bytes) -> None:
        """Send to the shell's terminal, ignoring a socket the shell already closed."""
        with contextlib.suppress(OSError):  # the shell has gone; its EOF comes next
            self.stream.write(data)

    def exit_code(self, sandbox: Sandbox) -> int:
        """The shell's exit code (asked until the engine reports it ended)."""
        for _ in range(100):
            code = self.stream.exit_code()
            if code is not None:
                return int(code)
            time.sleep(0.02)
        reason = sandbox.death_reason()
        if reason:
            raise SandboxNotRunning(f"sandbox {sandbox.name} stopped during the shell: {reason}")
        return -1


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, also when it is non-blocking."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        view = view[written:]


def attach_shell(
    sandbox: Sandbox,
    shell: str | None = None,
    record: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run an interactive shell in ``sandbox`` on this terminal; returns its exit code.

    ``shell`` defaults to /bin/bash if present, else /bin/sh. ``record`` names an asciicast v2
    file to write. ``env`` adds variables; TERM is this terminal's (default xterm-256color).
    """
    shell = shell or default_shell(sandbox)
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout.flush()
    term = os.environ.get("TERM") or DEFAULT_TERM
    width, height = terminal_size(stdin_fd if os.isatty(stdin_fd) else stdout_fd)
    recorder = None
    if record is not None:
        recorder = CastWriter(record, width, height, shell=shell, term=term,
                              title=f"agentkernel shell {sandbox.name}")
    try:
        stream = sandbox.open_exec([shell], env={"TERM": term, **(env or {})}, tty=True)
        session = _Session(stream, recorder)
        try:
            session.resize(width, height, attempts=10)
            with raw_mode(stdin_fd), winch_pipe(os.isatty(stdin_fd)) as winch_fd:
                session.pump(stdin_fd, stdout_fd, winch_fd)
        finally:
            session.stream.forget()
    finally:
        if recorder is not None:
            recorder.close()
    try:
        return session.exit_code(sandbox)
    except SandboxError:
        reason = sandbox.death_reason() or "the engine stopped answering"
        raise SandboxNotRunning(f"sandbox {sandbox.name} stopped during the shell: {reason}"
                                ) from None
