"""Requests to one runner: execute, comms, complete, inspect, is_complete, push, pull.

A :class:`RunnerSession` turns each call into a request frame with a fresh id, sent through its
:class:`~.connection.RunnerConnection`, and reads that request's inbox until its ``done``:
events go to the caller's ``on_event``, ``input_request`` to its ``on_input``. Every wait polls,
so a KeyboardInterrupt raised by a signal handler reaches the waiting thread promptly (it
interrupts the cell), and a dead runner turns into ``RunnerGone`` instead of a hang.
"""

from __future__ import annotations

import base64
import logging
import pickle
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import safepickle
from ..errors import RunnerError
from .connection import RunnerConnection
from .transport import RunnerTransport

log = logging.getLogger(__name__)

EVENT_TYPES = frozenset({"stream", "display", "result", "error", "clear_output", "comm_open",
                         "comm_msg", "comm_close"})
COMM_REQUESTS = ("comm_open", "comm_msg", "comm_close")


class RunnerSession:
    """Requests to one runner: execute, comms, complete, inspect, is_complete, push, pull,
    interrupt.

    ``on_orphan(frame)`` receives frames that belong to no waiting request (output of a
    background thread between cells, with id None); without it they are logged at debug level.
    ``log`` frames go to the ``agentkernel.runner`` logger. ``ready`` is the ready frame of a
    runner that was started (and read up to that frame) elsewhere: the warm pool.
    """

    def __init__(self, transport: RunnerTransport, *,
                 on_orphan: Callable[[dict], None] | None = None,
                 ready: dict | None = None) -> None:
        """A session on ``transport`` (see RunnerConnection for ``on_orphan`` and ``ready``)."""
        self._connection = RunnerConnection(transport, on_orphan=on_orphan, ready=ready)

    # -- public API --

    def wait_ready(self, timeout: float | None = 30.0) -> dict:
        """Wait for the runner's ``ready`` frame and return it (python, matplotlib, pid...)."""
        return self._connection.wait_ready(timeout)

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
        rid, inbox = self._connection.open()
        try:
            self._connection.send(request, rid)
            deadline = _deadline(timeout)
            while True:
                try:
                    frame = self._connection.peek(inbox, deadline, request["type"])
                    if frame["type"] == "done":
                        return _fields(frame)
                    frame = inbox.pop_stream() if frame["type"] == "stream" else inbox.pop()
                    self._dispatch(rid, frame, on_event, on_input)
                except KeyboardInterrupt:
                    self.interrupt()
        finally:
            self._connection.drop(rid)

    def interrupt(self) -> None:
        """Interrupt the running cell, if any. Safe from signal handlers and any thread."""
        self._connection.interrupt()

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
        return self._connection.exit_code()

    def close(self, timeout: float = 2.0) -> None:
        """Ask the runner to exit, wait up to ``timeout`` s for it, close the transport."""
        self._connection.close(timeout)

    def __enter__(self) -> RunnerSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests --

    def _call(self, request: dict, timeout: float | None) -> dict:
        """Send a request and return the fields of its ``done``; RunnerError on status error."""
        rid, inbox = self._connection.open()
        try:
            self._connection.send(request, rid)
            deadline = _deadline(timeout)
            peek = self._connection.peek
            while (frame := peek(inbox, deadline, request["type"]))["type"] != "done":
                inbox.pop()
        finally:
            self._connection.drop(rid)
        if frame.get("status") != "ok":
            raise RunnerError(frame.get("error") or f"{request['type']} failed")
        return _fields(frame)

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
        self._connection.send(reply, rid)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _fields(done: dict) -> dict:
    """A ``done`` frame without its type and id."""
    return {key: value for key, value in done.items() if key not in ("type", "id")}
