"""Handing a started sandbox to another process: how the description and its sockets travel.

A sandbox whose container and runner are up is described by a dict
(``start.StartedSandbox.handoff``: engine, endpoint, container id, exec id, the runner's ready
frame, configuration, notes) and three fds, the lifeline, the reaper pipe and the runner's
stream (``FD_KEYS``). They travel one way only: as a message with the fds attached, over a
socket pair (``send``/``receive``). The kernel's own start process
(``agentkernel_kernel.start_child``) writes to its end as it goes; the warm pool writes the
whole message before the kernel process exists (``hand_over``), and the kernel inherits the
other end, named in its environment (``HANDOFF_ENV``, ``inherit``/``inherited``).
Standard library only: a kernel reads them before its other imports.
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


def inherit(sock: socket.socket) -> dict[str, str]:
    """The environment that tells a process launched with ``pass_fds=(sock.fileno(),)``
    which of its fds is the end of the pair its handoff comes through."""
    return {HANDOFF_ENV: str(sock.fileno())}


def inherited() -> socket.socket | None:
    """The end of the handoff pair this process inherited, if any (taken once)."""
    raw = os.environ.pop(HANDOFF_ENV, None)
    if not raw or not raw.isdigit():
        return None
    try:
        return socket.socket(fileno=int(raw))
    except OSError:  # named, but not inherited: nothing comes
        return None


def hand_over(description: dict[str, Any], fds: Sequence[int]) -> socket.socket:
    """The end to pass to the process that adopts the sandbox: the whole handoff is written
    (the fds travel with it) and the sender's end closed, so it reads it, then its end."""
    ours, theirs = message_pair()
    try:
        send(ours, {"handoff": description}, fds)
    except BaseException:
        theirs.close()
        raise
    finally:
        ours.close()
    return theirs


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
    """Each message and the fds that came with it, until the sender closes its end; then
    ``sock`` is closed."""
    with sock:
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
