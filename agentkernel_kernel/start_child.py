"""The kernel's first sandbox: handed over by the warm pool, or started by a forked child.

``begin_first_sandbox`` is where it comes from, in every kernel process (``__main__`` and the
gateway's launcher). Without a warm pool, a child forked on the other core starts it:

A cold kernel makes two CPU-bound starts: its own (ipykernel's imports, about 0.25 s of CPU)
and its sandbox's (our modules, docker-py, the configuration and policy: about 0.15 s before
the engine is even asked to create the container). In one process they share the interpreter's
lock, so one waits for the other: measured, a kernel that also starts its sandbox answered
kernel_info 0.1-0.25 s later than one that does not, and its first result waits for that
answer (jupyter_client's ready wait), not for the sandbox, on an engine that starts containers
fast. Forked at the process's first step, before any thread or heavy import, the child starts
the sandbox and its runner (``start.start_with_runner``, as the warm pool does), and hands them
over as the pool does (``agentkernel.handoff``: the description, its fds sent over a socket
pair), after telling the image's id first so kernel_info can answer without waiting. Then
it exits; the kernel's manager adopts the sandbox (``SandboxManager.start_in_background``).
A start that fails is told, and the first cell starts again and says why, as after any failed
start in the background; when the child hands nothing over (it died, or the engine is remote,
whose streams the starting process would have to relay), the kernel starts the sandbox itself.
Standard library only until the fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentkernel.manager import SandboxManager

log = logging.getLogger(__name__)
EAGER_ENV = "AGENTKERNEL_EAGER_START"  # "0": no sandbox before the first cell


def begin_first_sandbox(make_manager: Callable[[], SandboxManager],
                        close: Iterable[socket.socket] = ()) -> SandboxManager:
    """The kernel's manager (``make_manager()``), its first sandbox already on its way: the one
    the warm pool handed over (``handoff.inherited``), else one a forked child starts
    (``close``: the kernel's own sockets, which the child closes), else one started in a
    thread; none with ``AGENTKERNEL_EAGER_START=0`` (the first cell starts it). Call it at
    the process's first step, before any thread and heavy import: it forks."""
    from agentkernel.handoff import inherited, receive

    handed = inherited()
    eager = os.environ.get(EAGER_ENV, "1") != "0"
    child = StartChild.fork(make_manager, close) if eager and handed is None else None
    manager = make_manager()
    if handed is not None:
        manager.start_in_background(receive(handed), source="the warm pool")
    elif child is not None:
        manager.start_in_background(child.messages(), source=f"the start child {child.pid}")
    elif eager:  # it could not fork: a thread starts it
        manager.start_in_background()
    return manager


class StartChild:
    """The forked process that starts this kernel's sandbox, as its parent sees it."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock

    @classmethod
    def fork(cls, make_manager: Callable[[], SandboxManager],
             close: Iterable[socket.socket] = ()) -> StartChild | None:
        """Fork the child, which closes ``close`` (the kernel's own sockets), starts the
        sandbox of ``make_manager()``'s configuration and never returns; None when this
        system cannot fork."""
        from agentkernel.handoff import message_pair

        ours, theirs = message_pair()
        try:
            pid = os.fork()
        except OSError as err:
            log.warning("cannot fork the sandbox's start process: %s", err)
            ours.close()
            theirs.close()
            return None
        if pid == 0:  # the child
            code = 1
            try:
                ours.close()
                for sock in close:
                    sock.close()
                code = _start_and_send(make_manager, theirs)
            except BaseException:
                log.warning("the sandbox's start process failed", exc_info=True)
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, ours)

    def messages(self) -> Iterator[tuple[dict, list[int]]]:
        """The child's messages (``handoff.receive``), then its exit is collected."""
        from agentkernel.handoff import receive

        try:
            yield from receive(self._sock)
        finally:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)


def _start_and_send(make_manager: Callable[[], SandboxManager], sock: socket.socket) -> int:
    """In the child: start the sandbox of the kernel's configuration and send it to the
    parent; the exit code (0: handed over)."""
    # The kernel's interrupts and terminal signals are the kernel's (jupyter_client signals
    # its whole process group); a child that died of one would only cost the kernel a retry.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from agentkernel import handoff
    from agentkernel.config.hostpaths import one_check
    from agentkernel.errors import SandboxError, one_line

    with one_check():  # the host's protected paths, worked out once for the policy and start
        manager = make_manager()
        try:
            started = manager.start_for_handoff(
                os.getppid(),
                on_image=lambda image_id: handoff.send(sock, {"image_id": image_id}))
        except SandboxError as err:
            handoff.send(sock, {"failed": one_line(err)})
            return 1
    if started is None:  # a remote engine: the kernel starts its sandbox itself
        return 2
    description, fds = started.handoff()
    handoff.send(sock, {"handoff": description}, fds)
    started.release()  # the kernel holds the sandbox now
    return 0
