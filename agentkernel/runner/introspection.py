"""Completion, inspection and is_complete, on a worker thread that can never wedge the runner.

They run user-defined code (``__dir__``, ``__repr__``, properties, ``__getattr__``), so they
run one at a time on their own thread, not on the main thread that runs cells. A request that
takes longer than ``limit`` seconds is stopped with an asynchronous KeyboardInterrupt into that
thread (effective as soon as it runs Python code again) and answered as unavailable; while one is
still running, later requests are answered at once as unavailable. The answers are those of
ipykernel's ``do_complete`` (IPython's experimental, Jedi-based completions), ``do_inspect`` and
``do_is_complete``.
"""

from __future__ import annotations

import queue
import sys
import threading
import time

from IPython.utils.tokenutil import token_at_cursor

EXPERIMENTAL_KEY = "_jupyter_types_experimental"  # ipykernel's metadata key for typed matches


def complete(shell, request: dict) -> dict:
    """ipykernel's ``_experimental_do_complete``."""
    # imported at the first completion, as the shell's completer is made (shell.py)
    from IPython.core.completer import provisionalcompleter, rectify_completions

    code = request["code"]
    cursor_pos = request.get("cursor_pos")
    if cursor_pos is None:
        cursor_pos = len(code)
    with provisionalcompleter():
        completions = list(rectify_completions(code, shell.Completer.completions(code,
                                                                                cursor_pos)))
    typed = [{"start": c.start, "end": c.end, "text": c.text, "type": c.type,
              "signature": c.signature} for c in completions]
    start = completions[0].start if completions else cursor_pos
    end = completions[0].end if completions else cursor_pos
    return {"matches": [c.text for c in completions], "cursor_start": start,
            "cursor_end": end, "metadata": {EXPERIMENTAL_KEY: typed}}


def inspect(shell, request: dict) -> dict:
    """ipykernel's ``do_inspect``: IPython's inspector on the name at the cursor."""
    name = token_at_cursor(request["code"], request["cursor_pos"])
    try:
        data = shell.object_inspect_mime(name, detail_level=int(request.get("detail_level", 0)),
                                         omit_sections=tuple(request.get("omit_sections", ())))
    except KeyError:
        return {"found": False, "data": {}, "metadata": {}}
    if not shell.enable_html_pager:
        data.pop("text/html", None)
    return {"found": True, "data": data, "metadata": {}}


def is_complete(shell, request: dict) -> dict:
    """ipykernel's ``do_is_complete``: IPython's transformer manager decides."""
    status, indent_spaces = shell.input_transformer_manager.check_complete(request["code"])
    answer = {"completeness": status}
    if status == "incomplete":
        answer["indent"] = " " * (indent_spaces or 0)
    return answer


HANDLERS = {"complete": complete, "inspect": inspect, "is_complete": is_complete}


def _raise_in_thread(ident: int, exception: type | None) -> None:
    """Set (or with None, clear) an asynchronous exception in thread ``ident``; nothing when
    this Python has no ctypes (the request then stays stuck, and later ones are refused)."""
    try:
        import ctypes
    except ImportError:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exception) if exception else None)


class Introspector:
    """One worker thread for complete/inspect/is_complete; ``reply(request, fields)`` sends a
    request's ``done`` (fields with status "ok", or "error" and a one-line ``error``)."""

    def __init__(self, shell, reply, limit: float) -> None:
        self._shell = shell
        self._reply = reply
        self._limit = limit
        self._lock = threading.Lock()
        self._running: str | None = None  # id of the request the worker is on
        self._answering = False  # the worker is inside a handler (an interrupt may stop it)
        self._started = 0.0
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._loop, name="agentkernel-introspection",
                                        daemon=True)
        # the shell's own hook is sys.excepthook while a cell runs, the other one otherwise
        sys.excepthook = self._ending_stopped_requests(sys.excepthook)
        shell.excepthook = self._ending_stopped_requests(shell.excepthook)
        self._worker.start()

    def _ending_stopped_requests(self, hook):
        """``hook``, except for a stop on the worker thread. IPython's completer hands a
        failing matcher's exception to ``sys.excepthook`` (which shows it) and goes on with the
        next matcher; a stop is no matcher's failure: it ends the whole request, quietly."""
        def excepthook(kind, value, tb):
            if issubclass(kind, KeyboardInterrupt) and threading.get_ident() == self._worker.ident:
                raise value
            return hook(kind, value, tb)
        return excepthook

    def submit(self, request: dict) -> None:
        """Queue ``request``, or answer it at once when the worker is still on another."""
        rid = request.get("id")
        with self._lock:
            busy = self._running
            if busy is None:
                self._running, self._started = rid, time.monotonic()
        if busy is not None:
            waited = time.monotonic() - self._started
            self._reply(request, {"status": "error", "error": (
                f"unavailable: an earlier completion or inspection has been running for "
                f"{waited:.0f} s and has not returned")})
            return
        self._requests.put(request)
        timer = threading.Timer(self._limit, self._stop, (rid,))
        timer.daemon = True
        timer.start()

    def _stop(self, rid: str) -> None:
        """Interrupt the worker if it is still on request ``rid``."""
        with self._lock:
            if self._running == rid:
                _raise_in_thread(self._worker.ident, KeyboardInterrupt)

    def interrupt(self) -> None:
        """Stop the request the worker is on, if any: a kernel interrupt stops everything the
        kernel runs (ipykernel runs completions on its main thread), and a request spinning
        in user code would otherwise slow the interrupted cell by holding the GIL."""
        with self._lock:
            if self._answering:
                _raise_in_thread(self._worker.ident, KeyboardInterrupt)

    def _loop(self) -> None:
        while True:
            request = self._requests.get()
            fields = self._stopped()
            try:
                fields = self._answer(request)
            except KeyboardInterrupt:  # a stop that landed just after the handler
                pass
            try:
                self._finish(request, fields)
            except KeyboardInterrupt:  # the one interrupt for this request came late
                self._finish(request, fields)

    def _stopped(self) -> dict:
        return {"status": "error",
                "error": f"stopped: interrupted, or not finished within {self._limit:g} s"}

    def _answer(self, request: dict) -> dict:
        """The request's fields; a stop or a failure becomes a one-line error."""
        stopped = self._stopped()
        try:
            with self._lock:
                self._answering = True  # from here on an interrupt may stop this request
            try:
                fields = HANDLERS[request["type"]](self._shell, request)
                fields["status"] = "ok"
                return fields
            except KeyboardInterrupt:
                return stopped
            except Exception as exc:
                return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
        except KeyboardInterrupt:  # landed in one of the handlers above
            return stopped

    def _finish(self, request: dict, fields: dict) -> None:
        with self._lock:
            self._answering = False
            if self._running == request.get("id"):
                self._running = None
                _raise_in_thread(self._worker.ident, None)  # drop an interrupt not yet raised
        self._reply(request, fields)
