"""Handing a started sandbox to another process: how the description and its sockets travel.

A sandbox whose container and runner are up is described by a dict (``pool.WarmSandbox.handoff``:
engine, endpoint, container id, exec id, the runner's ready frame, configuration, notes) and
three fds, the lifeline, the reaper pipe and the runner's stream (``FD_KEYS``). A kernel that
the warm pool launches inherits them, described in its environment (``HANDOFF_ENV``); a
kernel's own start process (``agentkernel_kernel.start_child``) sends them over a socket pair
(``send``/``receive``). Standard library only: a kernel reads them before its other imports.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

HANDOFF_ENV = "AGENTKERNEL_HANDOFF"
FD_KEYS = ("lifeline_fd", "reaper_fd", "runner_fd")  # the description's fds, in this order
MAX_MESSAGE = 1 << 20  # bytes of one message's JSON (a description is a few KB)


def handoff_env(description: dict[str, Any]) -> dict[str, str]:
    """The environment that tells a launched kernel about the sandbox it inherits."""
    return {HANDOFF_ENV: json.dumps(description)}


def take_handoff() -> dict[str, Any] | None:
    """The handoff description given to this process, if any (read once)."""
    raw = os.environ.pop(HANDOFF_ENV, None)
    return json.loads(raw) if raw else None


def message_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair for ``send``/``receive`` (each message arrives whole)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """Send ``message`` and, with it, copies of ``fds`` (the sender may close its own)."""
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"a handoff message of {len(data)} bytes is over {MAX_MESSAGE}")
    socket.send_fds(sock, [data], list(fds))


def receive(sock: socket.socket) -> Iterator[tuple[dict[str, Any], list[int]]]:
    """Each message and the fds that came with it, until the sender closes its end."""
    while True:
        data, fds, _flags, _address = socket.recv_fds(sock, MAX_MESSAGE, len(FD_KEYS))
        if not data:
            for fd in fds:
                os.close(fd)
            return
        yield json.loads(data), fds


def with_fds(description: dict[str, Any], fds: Sequence[int]) -> dict[str, Any]:
    """``description`` naming ``fds`` (received, in FD_KEYS order) instead of the sender's."""
    if len(fds) != len(FD_KEYS):
        raise ValueError(f"a handoff needs {len(FD_KEYS)} fds, {len(fds)} came")
    return {**description, **dict(zip(FD_KEYS, fds, strict=True))}
