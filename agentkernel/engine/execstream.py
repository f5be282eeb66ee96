"""The one place that knows the Docker API's hijacked exec socket (Docker and Podman).

A :class:`DockerExecStream` is one command running in a container with stdin attached. Without
a TTY its socket carries stdout and stderr multiplexed with 8-byte frame headers (stream id, 3
zero bytes, big-endian length); with a TTY it carries the terminal's raw bytes both ways.
``write`` sends to the command's stdin and ``close_stdin`` half-closes it. The same class reads
the container's main process through the lifeline's attach connection (``exec_id`` None): that
connection is the lifeline, so such a stream never shuts it down, it only closes its own fd.

The frame headers are read here, not by docker-py's helpers (``docker.utils.socket``:
``frames_iter``, ``next_frame_header``, ``read_exactly``, ``read``), which cannot serve a
long-lived stream: ``read`` waits in ``poll()`` with no timeout before each ``recv``, so a read
timeout (``set_timeout``: the runner's ready wait, the stall limit on a frame cut off, a
helper's compile limit) would never fire; ``read_exactly`` keeps what it has read in a local,
so a timeout or error in the middle of a header or payload loses those bytes and the stream is
out of step, and a ``frames_iter`` generator that raised cannot go on; and each header and each
payload is its own ``poll`` and ``recv`` (four system calls per frame, where this class reads up
to 64 KiB at once, many of the runner's small frames per read, and ``pending()`` tells the
caller what it has read ahead). This class is the one copy of the demultiplexing in agentkernel.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import deque
from typing import Any

from ..errors import EngineUnavailable, one_line
from .base import STDERR

_HEADER = struct.Struct(">BxxxL")
RECV_SIZE = 65536


class DockerExecStream:
    """A running exec: write its stdin, read its (demultiplexed) output."""

    def __init__(self, api: Any, exec_id: str | None, sock: socket.socket,
                 tty: bool = False) -> None:
        self._api = api
        self.exec_id = exec_id
        self.tty = tty
        self._sock = sock
        self._sock.settimeout(None)
        self._buffer = bytearray()
        self._stderr_tail: deque[bytes] = deque(maxlen=64)
        self._write_lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def set_timeout(self, seconds: float | None) -> None:
        """A read timeout (socket.timeout raised), or None to block."""
        self._sock.settimeout(seconds)

    def pending(self) -> int:
        """Bytes read from the socket but not yet returned."""
        return len(self._buffer)

    # -- writing -------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        with self._write_lock:
            self._sock.sendall(data)

    def close_stdin(self) -> None:
        """Half-close: the command sees EOF on stdin, its output still flows (not for the
        main process's stream: its stdin is the lifeline)."""
        if self.exec_id is None:
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- reading -------------------------------------------------------------------------
    def recv(self, size: int = RECV_SIZE) -> bytes:
        """Raw bytes as they arrive (a TTY exec's terminal output); b"" at the end."""
        try:
            return self._sock.recv(size)
        except TimeoutError:
            raise
        except OSError:
            return b""

    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            chunk = self.recv(max(RECV_SIZE, size - len(self._buffer)))
            if not chunk:
                return False
            self._buffer += chunk
        return True

    def read_frame(self) -> tuple[int, bytes] | None:
        """The next (stream, payload) pair, or None at end of stream."""
        if not self._fill(_HEADER.size):
            return None
        stream, length = _HEADER.unpack_from(self._buffer)
        if not self._fill(_HEADER.size + length):
            return None
        payload = bytes(self._buffer[_HEADER.size : _HEADER.size + length])
        del self._buffer[: _HEADER.size + length]
        return stream, payload

    def read(self) -> bytes:
        """Stdout bytes only (stderr is kept as a tail); b"" at end of stream."""
        while True:
            frame = self.read_frame()
            if frame is None:
                return b""
            stream, payload = frame
            if stream == STDERR:
                self._stderr_tail.append(payload)
            elif payload:
                return payload

    def stderr_tail(self) -> str:
        return b"".join(self._stderr_tail).decode("utf-8", "replace")[-2000:]

    # -- the exec ------------------------------------------------------------------------
    def exit_code(self) -> int | None:
        """The command's exit code once it has ended (None while it runs); EngineUnavailable
        when the engine cannot tell (it, or the container, is gone). None for the main
        process's stream (the engine records no code while the container runs)."""
        if self.exec_id is None:
            return None
        try:
            info = self._api.exec_inspect(self.exec_id)
        except Exception as err:
            raise EngineUnavailable(f"cannot read the exit code of exec {self.exec_id[:12]}: "
                                    f"{one_line(err, 120)}") from None
        return None if info.get("Running") else info.get("ExitCode")

    def resize(self, width: int, height: int) -> None:
        """Tell a TTY exec its window size."""
        self._api.exec_resize(self.exec_id, height=height, width=width)

    def close(self) -> None:
        """End the exec's connection (for every process that shares the socket); the main
        process's stream only closes this fd (its connection is the lifeline)."""
        if self.exec_id is None:
            self.forget()
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def forget(self) -> None:
        """Close this process's descriptor only; another process keeps the connection."""
        self._closed = True
        self._sock.close()
