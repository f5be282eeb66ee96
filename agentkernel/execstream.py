"""The one place that knows docker's hijacked exec socket.

An ``ExecStream`` runs one command in a container with stdin attached, Tty off. Its socket
carries stdout and stderr multiplexed with 8-byte frame headers (stream id, 3 zero bytes,
big-endian length); ``write`` sends to the command's stdin and ``close_stdin`` half-closes it.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import deque
from typing import Any

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")


def raw_socket(hijacked: Any) -> socket.socket:
    """The real socket behind docker-py's hijacked response (SocketIO on unix sockets)."""
    sock = getattr(hijacked, "_sock", hijacked)
    sock.settimeout(None)
    return sock


class ExecStream:
    """A running exec: write its stdin, read its demultiplexed stdout/stderr."""

    @classmethod
    def adopt(cls, api: Any, exec_id: str, fd: int) -> ExecStream:
        """An exec started by another process, whose socket this process inherited as ``fd``."""
        stream = cls.__new__(cls)
        stream._api, stream.exec_id = api, exec_id
        stream._sock = socket.socket(fileno=fd)
        stream._sock.settimeout(None)
        stream._init_buffers()
        return stream

    def __init__(
        self,
        api: Any,
        container_id: str,
        cmd: list[str],
        *,
        workdir: str | None = None,
        user: str | None = None,
        env: dict[str, str] | None = None,
        stdin: bool = True,
    ):
        self._api = api
        created = api.exec_create(
            container_id, cmd, stdin=stdin, stdout=True, stderr=True, tty=False,
            workdir=workdir, user=user or "", environment=env or None,
        )
        self.exec_id: str = created["Id"]
        self._sock = raw_socket(api.exec_start(self.exec_id, socket=True))
        self._init_buffers()

    def _init_buffers(self) -> None:
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
        """Half-close: the command sees EOF on stdin, its output still flows."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- reading -------------------------------------------------------------------------
    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            try:
                chunk = self._sock.recv(max(65536, size - len(self._buffer)))
            except TimeoutError:
                raise
            except OSError:
                chunk = b""
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

    def exit_code(self) -> int | None:
        """The command's exit code once it has ended (None while it runs)."""
        info = self._api.exec_inspect(self.exec_id)
        return None if info.get("Running") else info.get("ExitCode")

    def close(self) -> None:
        """End the exec's connection (for every process that shares the socket)."""
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
