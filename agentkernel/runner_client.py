"""Host side of the runner protocol (docs/ARCHITECTURE.md, "Runner protocol").

:func:`launch_runner` starts the runner in a sandbox and reads its ``ready`` frame;
a ``RunnerSession`` then talks to it over a ``RunnerTransport`` (a byte pipe to the runner's
stdin/stdout): requests go out through one writer thread, frames come back through one reader
thread that routes them to the waiting request by id. Every wait polls, so a KeyboardInterrupt
raised by a signal handler reaches the waiting thread promptly, and a dead runner turns into
``RunnerGone`` instead of a hang.
"""

from __future__ import annotations

import base64
import functools
import itertools
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from . import safepickle
from .errors import RunnerError, RunnerGone, RunnerUnsupported, SandboxError, one_line
from .runner.protocol import FrameDecoder, ProtocolError, check_frame, encode_frame
from .sandbox.bundle_volume import MOUNT as BUNDLE_MOUNT
from .sandbox.request import HOLD_SCRIPT

if TYPE_CHECKING:
    from .engine import ExecStream
    from .sandbox import Sandbox

log = logging.getLogger(__name__)
runner_log = logging.getLogger("agentkernel.runner")

POLL = 0.2  # seconds between checks while waiting for the runner
READY_TIMEOUT = 60.0  # seconds a runner may take to say it is ready
# A frame's bytes are written at once by the runner's one writer thread, so they arrive
# together: once a frame has begun, the host's reads must bring the rest within FRAME_STALL_S
# plus the time its bytes so far take at FRAME_MIN_RATE. User code can write to the protocol's
# fd: a header alone, or one followed by a trickle of bytes (from a thread an interrupt does
# not stop), breaks the session then, instead of holding every request for ever. Time the
# reader spends waiting for room in an inbox does not count.
FRAME_STALL_S = 10.0
FRAME_MIN_RATE = 64 * 1024  # bytes per second
READ_SIZE = 256 * 1024
STDERR_TAIL = 4096  # bytes of the runner's stderr kept for error messages
EVENT_TYPES = frozenset({"stream", "display", "result", "error", "clear_output", "comm_open",
                         "comm_msg", "comm_close"})
COMM_REQUESTS = ("comm_open", "comm_msg", "comm_close")
# Bytes of frames one request may have waiting for its requester. Beyond that the reader thread
# waits, so it stops reading the runner's stream and the runner's output writes block: a cell
# that prints faster than the host consumes is slowed down instead of filling host memory.
INBOX_LIMIT = 8 * 1024 * 1024
# Characters of consecutive same-stream output that execute() hands over as one event when
# frames have queued up (the requester fell behind): fewer, larger iopub messages in a flood.
STREAM_MERGE_LIMIT = 256 * 1024
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_INTERRUPT = encode_frame({"type": "interrupt"})
_SHUTDOWN = encode_frame({"type": "shutdown"})
# The ``exited`` frame the container's main process writes once the runner it ran has ended,
# as a printf format: "%3d" prints an exit status (0-255) in as many characters as it takes.
EXITED_FORMAT = '{"type":"exited","code":%3d}'


class RunnerTransport(Protocol):
    """A byte pipe to a runner. Implementations may also offer ``stderr_tail() -> str``."""

    def write(self, data: bytes) -> None:
        """Send all of ``data`` to the runner's stdin."""

    def read(self) -> bytes:
        """Block for the next bytes of the runner's stdout; b"" at end of file."""

    def close(self) -> None:
        """Release the pipe (and whatever runs the runner)."""


RUNNER_MODULES = ("protocol", "pump", "ipython_path", "kernel_api", "shell", "comms",
                  "introspection", "runner")


def runner_command(bundle: str | None = BUNDLE_MOUNT) -> list[str]:
    """The argv that starts the runner inside a sandbox, with agentkernel's IPython (if the
    sandbox has it mounted) at ``bundle``."""
    return ["python3", "-u", "-c", runner_source(), *([bundle] if bundle else [])]


def runner_main_command(bundle: str | None = BUNDLE_MOUNT) -> list[str]:
    """The container's main process when it runs the runner (``Sandbox.start(main=...)``):
    the runner on the container's stdin and stdout (no exec to wait for); once the runner has
    ended, an ``exited`` frame with its exit status (the stream cannot end: its connection is
    the lifeline), then the lifeline's wait for EOF, so that the container outlives its runner
    and the host can find out inside it why the runner died."""
    header = "".join(f"\\{byte:03o}" for byte in len(EXITED_FORMAT).to_bytes(4, "big"))
    script = f'"$@"; printf \'{header}{EXITED_FORMAT}\' "$?"; {HOLD_SCRIPT}'
    return ["/bin/sh", "-c", script, "agentkernel-runner", *runner_command(bundle)]


@functools.cache
def runner_source() -> str:
    """The source passed to ``python3 -u -c``: ``runner/boot.py``, then a call that loads the
    runner's modules from their sources (one argument; Linux caps it at 128 KiB)."""
    package = resources.files("agentkernel.runner")
    sources = {name: package.joinpath(f"{name}.py").read_text("utf-8")
               for name in RUNNER_MODULES}
    sources["__init__"] = ""
    boot = package.joinpath("boot.py").read_text("utf-8")
    return f"{boot}\nboot({sources!r})\n"


def launch_runner(sandbox: Sandbox, timeout: float = READY_TIMEOUT) -> tuple[ExecStream, dict]:
    """Start the runner in ``sandbox`` (or take the one its start ran as the container's main
    process, ``runner_main_command``); return its stream and its ``ready`` frame.

    Exactly the ready frame is read, nothing after it, so the stream can be handed to another
    process (the warm pool) or to a RunnerSession. SandboxError says why the runner did not
    come up (no python3 in the image, most often).
    """
    stream = sandbox.take_main_stream() or sandbox.open_exec(
        runner_command(), workdir=sandbox.effective.workdir)
    try:
        return stream, _read_ready(stream, timeout)
    except RunnerUnsupported:
        stream.close()
        raise
    except (ProtocolError, OSError) as err:
        stream.close()
        raise SandboxError(_no_runner_reason(sandbox, str(err))) from None


def _read_ready(stream: ExecStream, timeout: float) -> dict:
    """Read up to and including the ``ready`` frame; anything after it would be lost."""
    decoder = FrameDecoder()
    stream.set_timeout(timeout)
    try:
        while True:
            data = stream.read()
            if not data:
                raise ProtocolError(f"the runner exited: {one_line(stream.stderr_tail())}")
            for frame in decoder.feed(data):
                if frame.get("type") == "fatal":
                    raise RunnerUnsupported(one_line(str(frame.get("message"))))
                if frame.get("type") == "exited":
                    raise ProtocolError(f"the runner exited with code {frame.get('code')}: "
                                        f"{one_line(stream.stderr_tail())}")
                if frame.get("type") == "ready":
                    if decoder.pending() or stream.pending():
                        raise ProtocolError("the runner sent more than its ready frame")
                    return frame
    except TimeoutError:
        raise ProtocolError(f"the runner did not start within {timeout:g} s") from None
    finally:
        stream.set_timeout(None)


def _no_runner_reason(sandbox: Sandbox, detail: str) -> str:
    has_python = sandbox.exec("command -v python3").ok if sandbox.is_running else True
    if not has_python:
        return (
            f"image {sandbox.effective.image!r} has no python3: AgentKernel runs cells with "
            "the image's python3 (3.10 or newer); use a Python image such as "
            "python:3.12-slim, or install python3 in yours"
        )
    return f"the runner did not start in sandbox {sandbox.name}: {detail}"


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


class _Inbox:
    """Frames for one request, filled by the reader thread, consumed by the requester.

    At most ``limit`` bytes (their size on the wire) wait here: ``put`` blocks the reader thread
    while the inbox is full, until the requester takes frames or the inbox is closed.
    """

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self.frames: deque[dict] = deque()
        self.arrived = threading.Event()
        self._sizes: deque[int] = deque()
        self._held = 0
        self._limit = limit
        self._closed = False
        self._room = threading.Condition()

    def put(self, frame: dict | None, size: int = 0) -> None:
        """Queue ``frame``, waiting for room; None only wakes the requester."""
        if frame is not None:
            with self._room:
                while self._held >= self._limit and not self._closed:
                    self._room.wait()
                if self._closed:
                    return
                self.frames.append(frame)
                self._sizes.append(size)
                self._held += size
        self.arrived.set()

    def pop(self) -> dict:
        """Take the first frame (there must be one) and make room for the reader."""
        with self._room:
            frame = self.frames.popleft()
            self._held -= self._sizes.popleft()
            self._room.notify_all()
        return frame

    def pop_stream(self, limit: int = STREAM_MERGE_LIMIT) -> dict:
        """Take the first frame, a stream frame, merged with the queued stream frames of the
        same name that directly follow it, up to ``limit`` characters."""
        frame = self.pop()
        parts, size = [frame["text"]], len(frame["text"])
        while size < limit and self.frames:
            following = self.frames[0]
            if following["type"] != "stream" or following["name"] != frame["name"]:
                break
            parts.append(self.pop()["text"])
            size += len(parts[-1])
        return frame if len(parts) == 1 else {**frame, "text": "".join(parts)}

    def close(self) -> None:
        """No requester any more: release a waiting reader; later frames are dropped."""
        with self._room:
            self._closed = True
            self._room.notify_all()


class RunnerSession:
    """Requests to one runner: execute, comms, complete, inspect, is_complete, push, pull,
    interrupt.

    ``on_orphan(frame)`` receives frames that belong to no waiting request (output of a
    background thread between cells, with id None); without it they are logged at debug level.
    ``log`` frames go to the ``agentkernel.runner`` logger. ``ready`` is the ready frame of a
    runner that was started (and read up to that frame) elsewhere: the warm pool.
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
        self._inboxes: dict[str, _Inbox] = {}
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

    # -- public API --

    def wait_ready(self, timeout: float | None = 30.0) -> dict:
        """Wait for the runner's ``ready`` frame and return it (python, matplotlib, pid...)."""
        if not self._ready_event.wait(timeout):
            raise TimeoutError(f"the runner did not start within {timeout} s")
        if self._fatal is not None:
            raise RunnerUnsupported(self._fatal)
        if self._ready is None:
            raise RunnerGone(self._gone)
        return self._ready

    def execute(
        self,
        code: str,
        *,
        on_event: Callable[[dict], None],
        on_input: Callable[[str, bool], str] | None = None,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, str] | None = None,
        parent: dict | None = None,
        timeout: float | None = None,
    ) -> dict:
        """Run a cell; return its ``done`` fields (status "ok"/"error", execution_count,
        payload, user_expressions; ename, evalue, traceback on error).

        ``on_event(frame)`` gets the stream/display/result/error/comm frames in order.
        ``on_input(prompt, password)`` answers ``input()`` in the cell; without it the cell's
        ``input()`` raises StdinNotImplementedError (as in a kernel whose frontend has no
        stdin), and when it raises (EOFError quietly, anything else with a logged warning) the
        cell's ``input()`` raises EOFError. ``parent`` is the Jupyter request the cell runs
        for (``{"header": {...}}``, what ``get_ipython().kernel.get_parent()`` returns). A
        KeyboardInterrupt in this thread interrupts the cell and the wait goes on until the
        runner reports the cell done. TimeoutError leaves the cell running.
        """
        request = {"type": "execute", "code": code, "silent": silent,
                   "store_history": store_history, "allow_stdin": on_input is not None,
                   "user_expressions": user_expressions or {}, "parent": parent or {}}
        return self._stream(request, on_event, on_input, timeout)

    def comm(self, kind: str, fields: dict, *, on_event: Callable[[dict], None],
             parent: dict | None = None, timeout: float | None = None) -> dict:
        """Hand a frontend's ``comm_open``/``comm_msg``/``comm_close`` (``fields``: comm_id,
        data, metadata, buffers as base64, target_name) to the runner's comm manager;
        ``on_event`` gets what its handlers output. Returns the ``done`` fields."""
        if kind not in COMM_REQUESTS:
            raise RunnerError(f"unknown comm request {kind!r}: accepted {COMM_REQUESTS}")
        request = {**fields, "type": kind, "parent": parent or {}}
        return self._stream(request, on_event, None, timeout)

    def comm_info(self, target_name: str | None = None, *,
                  timeout: float | None = None) -> dict:
        """The runner's open comms (of ``target_name``): {comm_id: {"target_name": ...}}."""
        request = {"type": "comm_info", "target_name": target_name}
        return self._call(request, timeout).get("comms") or {}

    def _stream(self, request: dict, on_event, on_input, timeout: float | None) -> dict:
        """Send a request whose events go to ``on_event``; return its ``done`` fields."""
        rid, inbox = self._open()
        try:
            self._send(request, rid)
            deadline = _deadline(timeout)
            while True:
                try:
                    frame = self._peek(inbox, deadline, request["type"])
                    if frame["type"] == "done":
                        return _fields(frame)
                    frame = inbox.pop_stream() if frame["type"] == "stream" else inbox.pop()
                    self._dispatch(rid, frame, on_event, on_input)
                except KeyboardInterrupt:
                    self.interrupt()
        finally:
            self._drop(rid)

    def interrupt(self) -> None:
        """Interrupt the running cell, if any. Safe from signal handlers and any thread."""
        self._outbox.put(_INTERRUPT)  # SimpleQueue.put is reentrant

    def complete(self, code: str, cursor_pos: int, *, timeout: float | None = None) -> dict:
        """Completions at ``cursor_pos``: matches, cursor_start, cursor_end, metadata."""
        request = {"type": "complete", "code": code, "cursor_pos": cursor_pos}
        return self._call(request, timeout)

    def inspect(
        self, code: str, cursor_pos: int, detail_level: int = 0, *, timeout: float | None = None
    ) -> dict:
        """IPython's help for the name at ``cursor_pos``: found, data (a mime bundle),
        metadata."""
        request = {"type": "inspect", "code": code, "cursor_pos": cursor_pos}
        request["detail_level"] = detail_level
        return self._call(request, timeout)

    def is_complete(self, code: str, *, timeout: float | None = None) -> dict:
        """Jupyter's is_complete answer: status (complete/incomplete/invalid/unknown), and
        the indent of the next line when incomplete."""
        reply = self._call({"type": "is_complete", "code": code}, timeout)
        answer = {"status": str(reply.get("completeness", "unknown"))}
        if answer["status"] == "incomplete":
            answer["indent"] = str(reply.get("indent", ""))
        return answer

    def push(self, values: dict[str, Any], *, timeout: float | None = None) -> None:
        """Set names in the runner's namespace (values are pickled here, all or none)."""
        blobs = {}
        for name, value in values.items():
            try:
                blobs[name] = base64.b64encode(pickle.dumps(value)).decode("ascii")
            except Exception as exc:
                raise RunnerError(f"cannot pickle {name!r}: {type(exc).__name__}: {exc}") from exc
        self._call({"type": "push", "names": blobs}, timeout)

    def pull(self, names: Iterable[str], max_bytes: int = 16 * 1024 * 1024, *,
             timeout: float | None = None) -> dict[str, Any]:
        """Values of ``names`` from the runner's namespace, each at most ``max_bytes`` pickled.

        The values are rebuilt here with :func:`agentkernel.safepickle.loads_bounded`, which
        resolves only plain data, numpy and pandas values, in a process bounded in memory and
        CPU, so a pickle made in the sandbox can neither run code on this host nor exhaust it.
        """
        reply = self._call({"type": "pull", "names": list(names), "max_bytes": max_bytes},
                           timeout)
        values = {}
        for name, blob in reply["values"].items():
            try:
                values[name] = safepickle.loads_bounded(base64.b64decode(blob), max_bytes)
            except Exception as exc:
                raise RunnerError(f"cannot unpickle {name!r}: {type(exc).__name__}: {exc}") from exc
        return values

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

    def close(self, timeout: float = 2.0) -> None:
        """Ask the runner to exit, wait up to ``timeout`` s for it, close the transport."""
        if self._closed:
            return
        self._closed = True
        self._outbox.put(_SHUTDOWN)
        self._outbox.put(None)
        self._reader.join(timeout)
        self._transport.close()
        self._fail("the session was closed")

    def __enter__(self) -> RunnerSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests --

    def _open(self) -> tuple[str, _Inbox]:
        """Register an inbox for a new request id."""
        rid = str(next(self._ids))
        inbox = _Inbox()
        with self._lock:
            if self._gone is not None:
                raise RunnerGone(self._gone)
            self._inboxes[rid] = inbox
        return rid, inbox

    def _drop(self, rid: str) -> None:
        with self._lock:
            inbox = self._inboxes.pop(rid, None)
        if inbox is not None:
            inbox.close()

    def _send(self, request: dict, rid: str) -> None:
        request["id"] = rid
        try:
            frame = encode_frame(request)
        except ProtocolError as err:  # e.g. a cell of 11 MB of control characters
            raise RunnerError(f"the {request['type']} request is too large to send to the "
                              f"sandbox ({err})") from None
        self._outbox.put(frame)

    def _call(self, request: dict, timeout: float | None) -> dict:
        """Send a request and return the fields of its ``done``; RunnerError on status error."""
        rid, inbox = self._open()
        try:
            self._send(request, rid)
            deadline = _deadline(timeout)
            while (frame := self._peek(inbox, deadline, request["type"]))["type"] != "done":
                inbox.pop()
        finally:
            self._drop(rid)
        if frame.get("status") != "ok":
            raise RunnerError(frame.get("error") or f"{request['type']} failed")
        return _fields(frame)

    def _peek(self, inbox: _Inbox, deadline: float | None, what: str) -> dict:
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

    def _dispatch(self, rid: str, frame: dict, on_event, on_input) -> None:
        kind = frame["type"]
        if kind == "input_request":
            self._answer_input(rid, frame, on_input)
        elif kind in EVENT_TYPES:
            on_event(frame)
        else:
            log.debug("ignoring %s frame for execute %s", kind, rid)

    def _answer_input(self, rid: str, frame: dict, on_input) -> None:
        reply: dict[str, Any] = {"type": "input_reply", "eof": True}
        if on_input is not None:
            try:
                value = on_input(frame.get("prompt", ""), bool(frame.get("password")))
            except EOFError:  # the host has no input to give, as the cell will be told
                pass
            except Exception:
                log.warning("on_input failed; the cell gets EOFError", exc_info=True)
            else:
                reply = {"type": "input_reply", "value": str(value)}
        self._send(reply, rid)

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


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _fields(done: dict) -> dict:
    """A ``done`` frame without its type and id."""
    return {key: value for key, value in done.items() if key not in ("type", "id")}
