"""Frames to and from one runner: the writer and reader threads, and where frames go.

Requests go out through one writer thread (so an interrupt can be queued from a signal
handler); frames come back through one reader thread that checks each (``check_frame``) and
routes it: to the inbox of the request whose id it carries, the runner's own frames (``ready``,
``fatal``, ``exited``, ``log``) to the connection's state, the rest to ``on_orphan``. A frame
begun must end in time (``FRAME_STALL_S``), so user code writing to the protocol's fd cannot
hold the session for ever. When the runner goes, every waiter wakes with ``RunnerGone``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable

from ..errors import RunnerError, RunnerGone, RunnerUnsupported, one_line
from ..runner.protocol import FrameDecoder, ProtocolError, check_frame, encode_frame
from .inbox import Inbox
from .transport import RunnerTransport

log = logging.getLogger(__name__)
runner_log = logging.getLogger("agentkernel.runner")

POLL = 0.2  # seconds between checks while waiting for the runner
# A frame's bytes are written at once by the runner's one writer thread, so they arrive
# together: once a frame has begun, the host's reads must bring the rest within FRAME_STALL_S
# plus the time its bytes so far take at FRAME_MIN_RATE. User code can write to the protocol's
# fd: a header alone, or one followed by a trickle of bytes (from a thread an interrupt does
# not stop), breaks the session then, instead of holding every request for ever. Time the
# reader spends waiting for room in an inbox does not count.
FRAME_STALL_S = 10.0
FRAME_MIN_RATE = 64 * 1024  # bytes per second
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_INTERRUPT = encode_frame({"type": "interrupt"})
_SHUTDOWN = encode_frame({"type": "shutdown"})


class RunnerConnection:
    """The frames of one runner, both ways, and its state: ready, gone, exit code.

    ``on_orphan(frame)`` receives frames that belong to no open request; without it they are
    logged at debug level. ``ready`` is the ready frame of a runner read up to that frame
    elsewhere (the warm pool).
    """

    def __init__(
        self,
        transport: RunnerTransport,
        *,
        on_orphan: Callable[[dict], None] | None = None,
        ready: dict | None = None,
    ) -> None:
        self._transport = transport
        self._on_orphan = on_orphan
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._inboxes: dict[str, Inbox] = {}
        self._gone: str | None = None
        self._ready: dict | None = ready
        self._fatal: str | None = None  # why the runner could not start (a ``fatal`` frame)
        self._exit_code: int | None = None  # from an ``exited`` frame
        self._ready_event = threading.Event()
        if ready is not None:  # a runner handed over after it said ready
            self._ready_event.set()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._closed = False
        self._stall_timer = False  # the transport's read timeout is set (a frame is cut off)
        self._frame_wait = 0.0  # seconds spent reading the frame that is cut off so far
        self._reader = threading.Thread(
            target=self._read_loop, name="agentkernel-session-reader", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name="agentkernel-session-writer", daemon=True
        )
        self._reader.start()
        self._writer.start()

    # -- the runner --

    def wait_ready(self, timeout: float | None) -> dict:
        """Wait for the runner's ``ready`` frame and return it."""
        if not self._ready_event.wait(timeout):
            raise TimeoutError(f"the runner did not start within {timeout} s")
        if self._fatal is not None:
            raise RunnerUnsupported(self._fatal)
        if self._ready is None:
            raise RunnerGone(self._gone)
        return self._ready

    def interrupt(self) -> None:
        """Queue an ``interrupt`` frame. Safe from signal handlers and any thread."""
        self._outbox.put(_INTERRUPT)  # SimpleQueue.put is reentrant

    def exit_code(self) -> int | None:
        """The runner's exit code once it has ended, when its ``exited`` frame or the transport
        can tell (else None)."""
        if self._exit_code is not None:
            return self._exit_code
        ask = getattr(self._transport, "exit_code", None)
        try:
            return ask() if ask is not None else None
        except Exception:  # the engine may be gone too
            return None

    def close(self, timeout: float) -> None:
        """Ask the runner to exit, wait up to ``timeout`` s for it, close the transport."""
        if self._closed:
            return
        self._closed = True
        self._outbox.put(_SHUTDOWN)
        self._outbox.put(None)
        self._reader.join(timeout)
        self._transport.close()
        self._fail("the session was closed")

    # -- requests --

    def open(self) -> tuple[str, Inbox]:
        """Register an inbox for a new request id."""
        rid = str(next(self._ids))
        inbox = Inbox()
        with self._lock:
            if self._gone is not None:
                raise RunnerGone(self._gone)
            self._inboxes[rid] = inbox
        return rid, inbox

    def drop(self, rid: str) -> None:
        """Forget request ``rid``: its inbox closes, its later frames are dropped."""
        with self._lock:
            inbox = self._inboxes.pop(rid, None)
        if inbox is not None:
            inbox.close()

    def send(self, request: dict, rid: str) -> None:
        """Queue ``request`` under id ``rid`` for the writer thread."""
        request["id"] = rid
        try:
            frame = encode_frame(request)
        except ProtocolError as err:  # e.g. a cell of 11 MB of control characters
            raise RunnerError(f"the {request['type']} request is too large to send to the "
                              f"sandbox ({err})") from None
        self._outbox.put(frame)

    def peek(self, inbox: Inbox, deadline: float | None, what: str) -> dict:
        """The next frame of ``inbox``, left in place so an interrupt cannot lose it."""
        while True:
            if inbox.frames:
                return inbox.frames[0]
            if self._gone is not None:
                raise RunnerGone(self._gone)
            wait = POLL
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"the runner did not finish {what} in time")
            inbox.arrived.clear()
            if not inbox.frames and self._gone is None:
                inbox.arrived.wait(wait)

    # -- threads --

    def _write_loop(self) -> None:
        while (data := self._outbox.get()) is not None:
            try:
                self._transport.write(data)
            except Exception as exc:
                self._fail(f"cannot write to the runner: {exc}")
                return

    def _read_loop(self) -> None:
        decoder = FrameDecoder()
        try:
            while self._exit_code is None and (data := self._read(decoder)):
                before = decoder.pending()
                frames = decoder.feed(data)
                if frames:  # each frame's share of the bytes it took, for the inbox's limit
                    share = (before + len(data) - decoder.pending()) // len(frames)
                    self._frame_wait = 0.0  # what is pending now is a frame just begun
                for frame in frames:
                    self._route(frame, share)
            reason = "the runner exited"
        except ProtocolError as exc:
            reason = f"the runner broke the protocol: {exc}"
        except Exception as exc:
            reason = f"cannot read from the runner: {type(exc).__name__}: {exc}"
        self._fail(reason)

    def _read(self, decoder: FrameDecoder) -> bytes:
        """The next bytes from the runner. While a frame is incomplete its bytes must come
        (see FRAME_STALL_S): a frame whose rest does not come in time is a protocol break,
        not a wait for ever."""
        set_timeout = getattr(self._transport, "set_timeout", None)
        pending = decoder.pending()
        if not pending or set_timeout is None:
            if self._stall_timer:
                set_timeout(None)
                self._stall_timer = False
            self._frame_wait = 0.0
            return self._transport.read()
        budget = FRAME_STALL_S + pending / FRAME_MIN_RATE - self._frame_wait
        if budget <= 0:
            raise ProtocolError(_cut_off(pending, self._frame_wait))
        set_timeout(budget)
        self._stall_timer = True
        started = time.monotonic()
        try:
            return self._transport.read()
        except TimeoutError:
            raise ProtocolError(_cut_off(pending, self._frame_wait + budget)) from None
        finally:
            self._frame_wait += time.monotonic() - started

    def _route(self, frame: dict, size: int = 0) -> None:
        """Hand ``frame`` to its request's inbox (waiting while that is full), or elsewhere."""
        check_frame(frame)
        kind = frame["type"]
        if kind == "ready":
            self._ready = frame
            self._ready_event.set()
        elif kind == "fatal":  # before ready: it cannot start; after: IPython failed to load
            if self._ready is None:
                self._fatal = one_line(frame["message"])
            else:
                self._fail(one_line(frame["message"]))
        elif kind == "exited":  # the stream ends here (see runner_main_command)
            self._exit_code = frame["code"]
        elif kind == "log":
            level = _LOG_LEVELS.get(frame.get("level"), logging.ERROR)
            runner_log.log(level, "%s", frame.get("message"))
        elif (inbox := self._inboxes.get(frame.get("id"))) is not None:
            inbox.put(frame, size)
        elif self._on_orphan is not None:
            try:
                self._on_orphan(frame)
            except Exception:
                log.exception("on_orphan failed")
        else:
            log.debug("unclaimed %s frame for id %r", kind, frame.get("id"))

    def _fail(self, reason: str) -> None:
        """Mark the runner gone and wake every waiter (the first reason wins)."""
        tail = getattr(self._transport, "stderr_tail", None)
        if tail is not None and not self._closed:
            lines = tail().strip().splitlines()[-5:]
            if lines:
                reason += "; runner stderr: " + " | ".join(lines)
        with self._lock:
            if self._gone is None:
                self._gone = reason
            inboxes = list(self._inboxes.values())
        for inbox in inboxes:
            inbox.put(None)
        self._ready_event.set()


def _cut_off(pending: int, waited: float) -> str:
    return (f"a frame was cut off: {pending} bytes of it came, and not the rest within "
            f"{waited:.0f} s (a frame's bytes come at once)")
