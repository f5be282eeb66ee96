"""A connection served as one end of a local socket pair, pumped by two threads.

An exec stream or lifeline to a remote engine is a TLS connection or an SSH channel: neither is
a file descriptor another process can inherit (the warm pool's handoff), nor one ``select()``
can watch reliably. :func:`relay` turns it into a plain local socket: what is written there goes
to the engine, what the engine sends comes out there, a half-close there half-closes the
connection, and the connection ends when both directions have.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Protocol

RECV_SIZE = 65536


class Connection(Protocol):
    """What the relay needs of a connection (a TlsConnection, a paramiko Channel)."""

    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def close(self) -> None: ...


def relay(remote: Connection) -> socket.socket:
    """A local socket that carries ``remote``'s stream both ways (the caller owns it)."""
    ours, theirs = socket.socketpair()
    pending = [2]
    lock = threading.Lock()

    def finished() -> None:
        with lock:
            pending[0] -= 1
            last = pending[0] == 0
        if last:
            with contextlib.suppress(Exception):
                remote.close()
            ours.close()

    def down() -> None:  # engine -> local
        try:
            while chunk := remote.recv(RECV_SIZE):
                ours.sendall(chunk)
        except Exception:
            pass
        with contextlib.suppress(OSError):
            ours.shutdown(socket.SHUT_WR)
        finished()

    def up() -> None:  # local -> engine
        try:
            while data := ours.recv(RECV_SIZE):
                remote.sendall(data)
            remote.shutdown_write()
        except Exception:
            pass
        finished()

    for target, name in ((down, "down"), (up, "up")):
        threading.Thread(target=target, name=f"agentkernel-relay-{name}", daemon=True).start()
    return theirs
