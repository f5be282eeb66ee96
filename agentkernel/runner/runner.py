"""AgentKernel runner: runs notebook cells in IPython inside the sandbox container.

Launched as ``python3 -u -c <boot source> [BUNDLE]`` (``agentkernel.runner_client``); BUNDLE is
where the host mounted agentkernel's IPython. It speaks length-framed JSON (docs/ARCHITECTURE.md,
"Runner protocol") on private copies of its original stdin and stdout; fd 0 becomes /dev/null
and fds 1 and 2 become pipes that the pump forwards as ``stream`` frames (``pump.py``).

Threads: the main thread runs cells and comm messages in IPython (user code runs here, so
KeyboardInterrupt lands in it); a reader thread takes request frames from the host and acts on
interrupt/input_reply/shutdown at once, hands complete/inspect/is_complete to the introspection
worker and queues the rest for the main thread; the pump thread forwards output and writes the
frames others post. IPython is imported and its shell made before ``ready`` is sent.
"""

from __future__ import annotations

import base64
import faulthandler
import gc
import io
import keyword
import logging
import os
import pickle
import queue
import signal
import sys
import threading
import traceback

from . import ipython_path
from .protocol import FrameDecoder, ProtocolError, encode_frame
from .pump import CHUNK, Pump, guarded_thread, redirect_fds, write_all

EXIT_GRACE = 2.0  # seconds the pump gets to write pending frames before the runner exits
# Seconds a completion/inspection may run before it is stopped (Jedi's first completion in a
# fresh sandbox takes about 2 s on one CPU); AGENTKERNEL_INTROSPECTION_LIMIT overrides it.
INTROSPECTION_LIMIT = 10.0
FATAL_EXIT = 3  # exit code after a ``fatal`` frame: no usable IPython in the sandbox
MAIN_REQUESTS = ("execute", "push", "pull", "comm_open", "comm_msg", "comm_close", "comm_info")
INTROSPECTION_REQUESTS = ("complete", "inspect", "is_complete")


def _warn(message: str) -> None:
    """Tell the user about a non-fatal problem on the cell's stderr."""
    try:
        sys.stderr.write(f"[agentkernel] {message}\n")
    except Exception:
        pass


class InputStream(io.TextIOBase):
    """``sys.stdin`` for cells: each line is asked from the frontend like ``input()``; when the
    frontend cannot answer, reads return "" (end of file)."""

    encoding = "utf-8"

    def __init__(self, ask) -> None:
        super().__init__()
        self._ask = ask
        self._pending = ""

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        if not self._pending:
            reply = self._ask("")
            self._pending = "" if reply is None else reply + "\n"

    def readline(self, size: int | None = -1) -> str:
        """One line (ending in "\\n"), asked from the frontend when none is pending."""
        if size == 0:
            return ""
        self._fill()
        end = self._pending.find("\n") + 1 or len(self._pending)
        if size is not None and 0 < size < end:
            end = size
        line, self._pending = self._pending[:end], self._pending[end:]
        return line

    def read(self, size: int | None = -1) -> str:
        """Up to ``size`` characters of the pending line (one reply when none is pending)."""
        if size == 0:
            return ""
        self._fill()
        if size is None or size < 0:
            size = len(self._pending)
        text, self._pending = self._pending[:size], self._pending[size:]
        return text


class RequestFailed(Exception):
    """A request the runner answers with ``done`` status "error" and this message."""


class FrameLogHandler(logging.Handler):
    """Log records of libraries (comm) as ``log`` frames for the host's log."""

    def __init__(self, post) -> None:
        super().__init__(logging.INFO)
        self._post = post

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            level = level if level in ("debug", "info", "warning", "error") else "error"
            self._post(level, self.format(record))
        except Exception:
            pass


class Runner:
    """Runs requests from the host in one IPython shell."""

    def __init__(self, proto_in: int, proto_out: int, diag: int, out_r: int, err_r: int):
        self._in = proto_in
        self._diag = diag
        self._pump = Pump(proto_out, out_r, err_r)
        self._main_ident = threading.get_ident()
        self._state_lock = threading.Lock()
        self._depth = 0  # nesting of user code (a cell can run cells)
        self._interruptible = False  # user code is running: an interrupt may be sent
        self._interrupted = False  # a SIGINT was sent in the current window
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self._request: dict | None = None  # the request the main thread runs
        self._allow_stdin = False
        self._introspector = None
        self.shell = None
        self.ipython: tuple[str, str] = ("", "")

    # -- setup --

    def start(self) -> None:
        """Replace stdio, start the pump and request reader threads."""
        sys.stdout = self._text_stream(1)
        sys.stderr = self._text_stream(2)
        sys.stdin = InputStream(self._read_stdin)
        faulthandler.enable(io.FileIO(self._diag, "w", closefd=False))
        guarded_thread("agentkernel-pump", self._pump.run, self._diag).start()
        guarded_thread("agentkernel-requests", self._read_requests, self._diag).start()

    @staticmethod
    def _text_stream(fd: int) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(raw, "utf-8", "backslashreplace", write_through=True)

    def choose_ipython(self, bundle: str | None) -> None:
        """Choose the IPython (image's or bundle's) and put it on sys.path; Unsupported when
        none can run here. Package metadata only: nothing is imported yet."""
        self.ipython = ipython_path.prepare(bundle)

    def install_shell(self) -> None:
        """Import IPython and make the shell, the comms and the introspection thread."""
        from . import lazy_terminal

        lazy_terminal.import_ipython(self.ipython[1])
        from . import comms, introspection
        from .shell import make_shell

        self.shell = make_shell(self)
        comms.install(self, FrameLogHandler(self._log))
        limit = float(os.environ.get("AGENTKERNEL_INTROSPECTION_LIMIT") or INTROSPECTION_LIMIT)
        self._introspector = introspection.Introspector(self.shell, self._reply, limit)

    def fatal(self, message: str) -> None:
        """Tell the host why the runner cannot run, and exit."""
        self._pump.finish(encode_frame({"type": "fatal", "message": message}))
        os._exit(FATAL_EXIT)

    def announce(self) -> None:
        """Send ``ready``: the protocol works and IPython is chosen (its import follows)."""
        import importlib.util

        try:
            matplotlib = importlib.util.find_spec("matplotlib") is not None
        except (ImportError, ValueError):
            matplotlib = False
        self._pump.post(encode_frame({
            "type": "ready",
            "python": "{}.{}.{}".format(*sys.version_info[:3]),
            "implementation": sys.implementation.name,
            "ipython": self.ipython[1],
            "ipython_from": self.ipython[0],
            "matplotlib": matplotlib,
            "pid": os.getpid(),
        }))

    def serve(self) -> None:
        """Run requests forever."""
        while True:
            try:
                request = self._requests.get()
            except KeyboardInterrupt:  # a SIGINT from elsewhere while idle
                continue
            self._handle(request)

    # -- reader thread --

    def _read_requests(self) -> None:
        decoder = FrameDecoder()
        while True:
            data = os.read(self._in, CHUNK)
            if not data:
                self._exit(0)
            try:
                frames = decoder.feed(data)
            except ProtocolError as exc:
                self._log("error", f"unreadable request stream, exiting: {exc}")
                self._exit(1)
            for frame in frames:
                self._accept(frame)

    def _accept(self, frame: dict) -> None:
        kind = frame["type"]
        if kind == "interrupt":
            if self._introspector is not None:
                self._introspector.interrupt()
            with self._state_lock:
                if self._interruptible:
                    self._interrupted = True
                    signal.pthread_kill(self._main_ident, signal.SIGINT)
        elif kind == "input_reply":
            self._replies.put(frame)
        elif kind == "shutdown":
            self._exit(0)
        elif kind in INTROSPECTION_REQUESTS and self._introspector is not None:
            self._introspector.submit(frame)
        else:
            self._requests.put(frame)

    def _exit(self, code: int) -> None:
        """Exit once the frames queued so far are written (or after EXIT_GRACE seconds)."""
        threading.Timer(EXIT_GRACE, os._exit, (code,)).start()
        self._pump.flush()
        os._exit(code)

    def _log(self, level: str, message: str) -> None:
        self._pump.post(encode_frame({"type": "log", "level": level, "message": message}))

    def _reply(self, request: dict, fields: dict) -> None:
        """Send ``done`` for a request answered off the main thread."""
        self._pump.post(encode_frame({"type": "done", "id": request.get("id"), **fields}))

    # -- the transport the shell and comms use --

    def output(self, frame: dict) -> None:
        """Send a display/result/error/comm frame of the running request; it is written
        before this returns, so output written later cannot overtake it. A frame that cannot
        be encoded becomes a warning on the cell's stderr."""
        frame["id"] = self._request.get("id") if self._request else None
        try:
            data = encode_frame(frame)
        except (ProtocolError, TypeError, ValueError) as exc:
            _warn(f"{frame['type']} output dropped: {exc}")
            return
        self._pump.post(data, wait=True)

    def parent(self) -> dict:
        """The Jupyter request being run, as ``{"header": {...}}`` (``{}`` when none)."""
        request = self._request or {}
        parent = dict(request.get("parent") or {})
        content = parent.get("content")
        if isinstance(content, dict) and "code" in request:  # sent once, as the request's
            parent["content"] = {**content, "code": request["code"]}
        return parent

    def ask(self, prompt: str, password: bool) -> str:
        """Ask the frontend for a line; StdinNotImplementedError when it cannot answer."""
        from .shell import StdinNotImplementedError

        if not self._allow_stdin or self._request is None:
            what = "getpass" if password else "raw_input"
            raise StdinNotImplementedError(
                f"{what} was called, but this frontend does not support input requests.")
        sys.stdout.flush()
        sys.stderr.flush()
        while True:  # drop replies to requests that were interrupted
            try:
                self._replies.get_nowait()
            except queue.Empty:
                break
        frame = {"type": "input_request", "id": self._request.get("id"), "prompt": prompt,
                 "password": password}
        try:  # the reply may be an interrupt as soon as the request is out
            self._pump.post(encode_frame(frame))
            reply = self._replies.get()
        except KeyboardInterrupt:
            raise KeyboardInterrupt("Interrupted by user") from None
        if reply.get("eof"):
            raise EOFError
        return str(reply.get("value", ""))

    def _read_stdin(self, prompt: str) -> str | None:
        """A line for ``sys.stdin``; None (end of file) when the frontend cannot answer."""
        from .shell import StdinNotImplementedError

        try:
            return self.ask(prompt, False)
        except (StdinNotImplementedError, EOFError):
            return None

    def enter_user_code(self) -> None:
        """Open the interrupt window (user code starts; windows nest)."""
        with self._state_lock:
            self._depth += 1
            self._interruptible = True

    def leave_user_code(self, all_levels: bool = False) -> None:
        """Close the interrupt window when the outermost user code ends; a SIGINT that raced
        its closing is delivered here (and raises KeyboardInterrupt here)."""
        with self._state_lock:
            self._depth = 0 if all_levels else max(0, self._depth - 1)
            if self._depth:
                return
            self._interruptible = False
            interrupted, self._interrupted = self._interrupted, False
        if interrupted:
            # A syscall: a pending SIGINT is delivered on its return, then handlers run.
            signal.pthread_sigmask(signal.SIG_BLOCK, ())

    def _close_window(self) -> None:
        """Close the interrupt window whatever its depth; absorb a SIGINT that raced it."""
        try:
            self.leave_user_code(all_levels=True)
        except KeyboardInterrupt:
            pass

    # -- requests --

    def _handle(self, request: dict) -> None:
        """Run one request; whatever happens, answer it with ``done``."""
        kind, rid = request["type"], request.get("id")
        if kind in INTROSPECTION_REQUESTS:  # arrived before the introspection thread was up
            self._introspector.submit(request)
            return
        self._request = request
        self._pump.tag = rid
        try:
            if kind == "execute":
                fields = self._execute(request)
            elif kind in ("push", "pull"):
                fields = getattr(self, f"_{kind}")(request)
                fields["status"] = "ok"
            elif kind in MAIN_REQUESTS:
                fields = self._comm(request)
                fields["status"] = "ok"
            else:
                raise RequestFailed(f"unknown request type {kind!r}")
        except RequestFailed as exc:
            fields = {"status": "error", "error": str(exc)}
        except (Exception, KeyboardInterrupt) as exc:
            self._close_window()
            self._log("error", f"{kind} request failed:\n{traceback.format_exc()}")
            fields = {"status": "error", "error": f"runner failure: {type(exc).__name__}: {exc}"}
        self._request = None
        self._allow_stdin = False
        self._pump.finish(encode_frame({"type": "done", "id": rid, **fields}))

    def _execute(self, request: dict) -> dict:
        """Run a cell as ipykernel's ``do_execute`` does; return the reply's fields."""
        shell = self.shell
        self._allow_stdin = bool(request.get("allow_stdin", False))
        silent = bool(request.get("silent", False))
        from .shell import flush_std

        try:
            result = shell.run_cell(request["code"],
                                    store_history=bool(request.get("store_history", True)),
                                    silent=silent)
        except KeyboardInterrupt:  # outside IPython's own handling: still the cell's interrupt
            self._close_window()
            shell.showtraceback()
            result = None
        finally:
            self._close_window()
        flush_std()
        fields: dict = {"execution_count": shell.execution_count - 1}
        if result is None:
            fields.update(status="error", ename="KeyboardInterrupt", evalue="",
                          traceback=[str(line) for line in shell._last_traceback or []],
                          user_expressions={}, payload=[])
            return fields
        error = result.error_before_exec or result.error_in_exec
        if result.success and not shell._last_traceback_during_displayhook:
            fields["status"] = "ok"
            fields["user_expressions"] = self._user_expressions(request)
        else:
            fields.update(status="error", ename=type(error).__name__, evalue=str(error),
                          traceback=[str(line) for line in shell._last_traceback or []])
            fields["user_expressions"] = {}
        fields["payload"] = shell.payload_manager.read_payload()
        shell.payload_manager.clear_payload()
        return fields

    def _user_expressions(self, request: dict) -> dict:
        expressions = request.get("user_expressions") or {}
        if not expressions:
            return {}
        self.enter_user_code()
        try:
            return self.shell.user_expressions(expressions)
        finally:
            self._close_window()

    def _comm(self, request: dict) -> dict:
        """A comm request from the frontend: its handlers are user code."""
        from . import comms

        self.enter_user_code()
        try:
            return comms.handle(request)
        finally:
            self._close_window()

    def _push(self, request: dict) -> dict:
        values = {}
        for name, blob in request["names"].items():
            if not name.isidentifier() or keyword.iskeyword(name):
                raise RequestFailed(f"{name!r} is not a valid Python name")
            try:
                values[name] = pickle.loads(base64.b64decode(blob))
            except Exception as exc:
                raise RequestFailed(
                    f"cannot unpickle {name!r}: {type(exc).__name__}: {exc}"
                ) from None
        self.shell.user_ns.update(values)
        return {}

    def _pull(self, request: dict) -> dict:
        values, problems = {}, []
        namespace = self.shell.user_ns
        for name in request["names"]:
            if name not in namespace:
                problems.append(f"name {name!r} is not defined")
                continue
            try:
                data = pickle.dumps(namespace[name])
            except Exception as exc:
                problems.append(f"cannot pickle {name!r}: {type(exc).__name__}: {exc}")
                continue
            limit = request.get("max_bytes")
            if isinstance(limit, int) and len(data) > limit:
                problems.append(f"{name!r} is {len(data)} bytes pickled, over the {limit}-byte "
                                "limit (the operator's max_pull_mb)")
                continue
            values[name] = base64.b64encode(data).decode("ascii")
        if problems:
            raise RequestFailed("; ".join(problems))
        return {"values": values}


def main() -> None:
    """Entry point inside the container."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bundle = sys.argv.pop(1) if len(sys.argv) > 1 else None
    runner = Runner(*redirect_fds())
    runner.start()
    try:
        runner.choose_ipython(bundle)
    except ipython_path.Unsupported as exc:
        runner.fatal(str(exc))
    # Ready before IPython is imported: that import (about 0.1 s) then overlaps the host's
    # own start (its kernel_info, the client's handshake), and requests wait for it in order.
    runner.announce()
    try:
        runner.install_shell()
    except BaseException as exc:
        write_all(runner._diag, traceback.format_exc().encode("utf-8", "replace"))
        runner.fatal(f"IPython could not start in the sandbox: {type(exc).__name__}: {exc}")
    # boot.py held the collector off while IPython loaded: what the start made moves to the
    # oldest generation unscanned (frozen, then thawed there: both O(1)), so the first cell's
    # collection does not walk it; gc.get_objects() still sees it, as in a local kernel
    gc.freeze()
    gc.unfreeze()
    gc.enable()
    runner.serve()
