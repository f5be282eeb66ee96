"""AgentKernel runner: runs notebook cells inside the sandbox container.

Launched as ``python3 -u -c <this file's source>``. It speaks length-framed JSON (see
docs/ARCHITECTURE.md, "Runner protocol") on private copies of its original stdin and stdout; fd 0
becomes /dev/null and fds 1 and 2 become pipes that one pump thread forwards as ``stream`` frames.

Threads: the main thread runs requests (user code runs here, so KeyboardInterrupt lands in it);
a reader thread takes request frames from the host and acts on interrupt/input_reply/shutdown at
once; the pump thread forwards output and writes the frames others post. Every frame is written
under the pump's lock, and the main thread writes only when no interrupt can reach it (its
``done``), so a KeyboardInterrupt never cuts a frame in half.

Standard library only, Python 3.8+. Its frame codec is ``protocol.py``, whose source is sent
ahead of this one (``agentkernel.runner_client.runner_source``).
"""

from __future__ import annotations

import ast
import base64
import builtins
import codecs
import codeop
import collections
import faulthandler
import getpass
import importlib.machinery
import importlib.util
import io
import keyword
import linecache
import os
import pickle
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import traceback
import types
import warnings

try:  # imported as a package module (tests); run as ``python3 -c``, protocol.py came first
    from .protocol import FrameDecoder, ProtocolError, encode_frame
except ImportError:
    pass

CHUNK = 64 * 1024  # bytes read from an output pipe at a time
DRAIN_READS = 16  # rounds of reads when draining, so a writer that never stops cannot starve us
LINGER = 0.001  # seconds the pump waits for the rest of a burst of output
EXIT_GRACE = 2.0  # seconds the pump gets to write pending frames before the runner exits

_RUNNER_GLOBALS = globals()  # frames running with these globals are the runner's, not the user's


# --- small helpers -----------------------------------------------------------------------------


def _warn(message: str) -> None:
    """Tell the user about a non-fatal problem on the cell's stderr."""
    try:
        sys.stderr.write(f"[agentkernel] {message}\n")
    except Exception:
        pass


def _flush_std() -> None:
    """Flush sys.stdout and sys.stderr (the user may have replaced them)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _safe_repr(obj: object) -> str:
    """repr(obj), or object.__repr__(obj) when the object's own repr raises."""
    try:
        return repr(obj)
    except Exception as exc:
        _warn(f"repr() of a {type(obj).__name__} raised {type(exc).__name__}: {exc}")
        return object.__repr__(obj)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _guarded_thread(name: str, target, diag_fd: int) -> threading.Thread:
    """A daemon thread whose crash is reported on the original stderr and ends the runner."""

    def run() -> None:
        try:
            target()
        except BaseException:
            text = f"agentkernel runner: thread {name} crashed\n" + traceback.format_exc()
            try:
                _write_all(diag_fd, text.encode("utf-8", "replace"))
            finally:
                os._exit(70)

    return threading.Thread(target=run, name=name, daemon=True)


# --- rich output -------------------------------------------------------------------------------

_REPR_METHODS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_latex_", "text/latex"),
    ("_repr_json_", "application/json"),
    ("_repr_javascript_", "application/javascript"),
)
_BINARY_MIMES = ("image/png", "image/jpeg")


def _mime_value(mime: str, value: object) -> object:
    """Convert one repr value for JSON: images to base64, JSON mimes to dict/list, else str."""
    if isinstance(value, (bytes, bytearray)):
        if mime in _BINARY_MIMES:
            return base64.b64encode(value).decode("ascii")
        return bytes(value).decode("utf-8", "replace")
    if mime == "application/json" or mime.endswith("+json"):
        if isinstance(value, (dict, list)):
            return value
        raise TypeError(f"expected a dict or list, got {type(value).__name__}")
    if isinstance(value, str):
        return value
    raise TypeError(f"expected str, got {type(value).__name__}")


def _call_repr(obj: object, method: str) -> object:
    """Call ``obj.method()``; None when missing or when it raises (the error is logged)."""
    try:
        func = getattr(obj, method, None)
        return func() if callable(func) else None
    except Exception as exc:
        _warn(f"{type(obj).__name__}.{method}() raised {type(exc).__name__}: {exc}")
        return None


def _add_repr(data: dict, metadata: dict, mime: str, value: object, source: str) -> None:
    """Store ``value`` (or a ``(value, metadata)`` pair) under ``mime``, skipping bad types."""
    if isinstance(value, tuple) and len(value) == 2:
        value, extra = value
        if isinstance(extra, dict) and extra:
            metadata[mime] = extra
    if value is None:
        return
    try:
        data[mime] = _mime_value(mime, value)
    except TypeError as exc:
        _warn(f"{source} for {mime}: {exc}")


def mime_bundle(obj: object) -> tuple[dict, dict]:
    """Return (data, metadata) for ``obj``, like IPython's display formatter."""
    data: dict = {}
    metadata: dict = {}
    if not isinstance(obj, type):  # a class's _repr_*_ are unbound methods
        bundle = _call_repr_mimebundle(obj)
        if isinstance(bundle, tuple) and len(bundle) == 2:
            bundle, extra = bundle
            if isinstance(extra, dict):
                metadata.update(extra)
        if isinstance(bundle, dict):
            for mime, value in bundle.items():
                _add_repr(data, metadata, mime, value, "_repr_mimebundle_")
        for method, mime in _REPR_METHODS:
            if mime not in data:
                value = _call_repr(obj, method)
                if value is not None:
                    _add_repr(data, metadata, mime, value, f"{type(obj).__name__}.{method}()")
    if "text/plain" not in data:
        data["text/plain"] = _safe_repr(obj)
    return data, metadata


def _call_repr_mimebundle(obj: object) -> object:
    """Call ``obj._repr_mimebundle_(include=None, exclude=None)``; None if absent or failing."""
    try:
        func = getattr(obj, "_repr_mimebundle_", None)
        return func(include=None, exclude=None) if callable(func) else None
    except Exception as exc:
        _warn(f"{type(obj).__name__}._repr_mimebundle_() raised {type(exc).__name__}: {exc}")
        return None


class DisplayHandle:
    """Returned by ``display(..., display_id=...)``: shows or updates that output again."""

    def __init__(self, show, display_id: str) -> None:
        self._show = show
        self.display_id = display_id

    def display(self, obj: object, **kwargs) -> None:
        """Show ``obj`` as a new output with this display id."""
        self._show(obj, display_id=self.display_id, **kwargs)

    def update(self, obj: object, **kwargs) -> None:
        """Replace every output with this display id by ``obj``."""
        self._show(obj, display_id=self.display_id, update=True, **kwargs)

    def __repr__(self) -> str:
        return f"<DisplayHandle display_id={self.display_id}>"


# --- cell source transforms --------------------------------------------------------------------

_SHELL_LINE = re.compile(r"^([ \t]*)!(.*?)\r?$")
SHELL_HELPER = "__agentkernel_shell__"


def _statement_starts(lines: list[str], candidates: list[int]) -> set[int] | None:
    """1-based rows where a logical line starts, or None when the source does not tokenize.

    Candidate ``!`` lines are masked as ``pass`` first, so a ``!`` line inside a string or a
    bracket is seen for what it is.
    """
    import tokenize

    masked = list(lines)
    for i in candidates:
        masked[i] = _SHELL_LINE.match(lines[i]).group(1) + "pass"
    skip = (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    starts = set()
    at_start = True
    try:
        for tok in tokenize.generate_tokens(io.StringIO("\n".join(masked)).readline):
            if tok.type == tokenize.NEWLINE:
                at_start = True
            elif tok.type not in skip and at_start:
                starts.add(tok.start[0])
                at_start = False
    except (tokenize.TokenError, SyntaxError):
        return None
    return starts


def transform_shell_lines(code: str) -> str:
    """Turn statement-level ``!cmd`` lines into helper calls, keeping line numbers."""
    lines = code.split("\n")
    candidates = [i for i, line in enumerate(lines) if _SHELL_LINE.match(line)]
    if not candidates:
        return code
    starts = _statement_starts(lines, candidates)
    for i in candidates:
        if starts is None or i + 1 in starts:
            indent, command = _SHELL_LINE.match(lines[i]).groups()
            lines[i] = f"{indent}{SHELL_HELPER}({command!r})"
    return "\n".join(lines)


def cell_magic_shell(code: str) -> tuple[str, str] | None:
    """For a ``%%sh`` / ``%%bash`` cell return (shell, script); None for any other cell."""
    head, _, script = code.lstrip().partition("\n")
    name = head.strip()
    if name == "%%sh":
        return "/bin/sh", script
    if name == "%%bash":
        import shutil

        return shutil.which("bash") or "/bin/sh", script
    return None


def _ends_with_semicolon(code: str, node: ast.expr) -> bool:
    """True when the cell's last expression is followed by ``;`` (IPython hides its result)."""
    line = code.split("\n")[node.end_lineno - 1].encode("utf-8")
    rest = line[node.end_col_offset :].decode("utf-8", "replace")
    return rest.lstrip().startswith(";")


def _user_traceback(
    tb: types.TracebackType | None, user_globals: dict
) -> types.TracebackType | None:
    """``tb`` with user code (``user_globals``) and what it called; the runner's frames and
    what the runner itself called (ast.parse, subprocess...) are left out."""
    kept = []
    calling = False  # is the previous frame user code, or called by user code?
    while tb is not None:
        globals_ = tb.tb_frame.f_globals
        calling = globals_ is not _RUNNER_GLOBALS and (calling or globals_ is user_globals)
        if calling:
            kept.append(tb)
        tb = tb.tb_next
    result = None
    for entry in reversed(kept):
        result = types.TracebackType(result, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return result


def format_user_exception(exc: BaseException, user_globals: dict) -> list[str]:
    """Traceback lines of ``exc`` and its chained exceptions, with user frames only."""
    seen = set()
    pending = [exc]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        item.__traceback__ = _user_traceback(item.__traceback__, user_globals)
        pending += [item.__cause__, item.__context__]
    try:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    except Exception:
        lines = [f"{type(exc).__name__}: <str() of the exception failed>"]
    return [line.rstrip("\n") for line in lines]


# --- completion, inspection --------------------------------------------------------------------


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_."


def _name_before(code: str, end: int) -> str:
    """The dotted name that ends at ``end``."""
    start = end
    while start > 0 and _is_name_char(code[start - 1]):
        start -= 1
    return code[start:end]


def _open_call(code: str, pos: int) -> int:
    """Index of the innermost unclosed ``(`` before ``pos``, or -1."""
    depth = 0
    for i in range(pos - 1, -1, -1):
        if code[i] == ")":
            depth += 1
        elif code[i] == "(":
            if depth == 0:
                return i
            depth -= 1
    return -1


def name_at(code: str, pos: int) -> str:
    """The dotted name under the cursor, else the callee of the call the cursor is in."""
    end = pos
    while end < len(code) and _is_name_char(code[end]):
        end += 1
    name = _name_before(code, end).strip(".")
    if name:
        return name
    paren = _open_call(code, pos)
    return _name_before(code, paren).strip(".") if paren > 0 else ""


def describe(obj: object, name: str, detail_level: int) -> str:
    """IPython-like text for inspect: type, string form, signature, docstring (and source)."""
    import inspect

    lines = [f"Type:      {type(obj).__name__}"]
    if not callable(obj) and not inspect.ismodule(obj):
        form = _safe_repr(obj)
        lines.append(f"String form: {form if len(form) <= 500 else form[:500] + '...'}")
    if callable(obj):
        try:
            lines.append(f"Signature: {name.rsplit('.', 1)[-1]}{inspect.signature(obj)}")
        except (TypeError, ValueError):
            pass
    lines.append("Docstring:\n" + (inspect.getdoc(obj) or "<no docstring>"))
    if detail_level > 0:
        try:
            lines.append("Source:\n" + inspect.getsource(obj))
        except (OSError, TypeError):
            pass
    return "\n".join(lines)


def completions(namespace: dict, token: str) -> list[str]:
    """rlcompleter matches for ``token`` (a name or ``obj.attr``), without "(" or ": " suffixes."""
    import rlcompleter

    completer = rlcompleter.Completer(namespace)
    found = completer.attr_matches(token) if "." in token else completer.global_matches(token)
    return sorted({match.rstrip("(: ") for match in found})


def is_complete(code: str) -> dict:
    """``is_complete`` answer: completeness (complete/incomplete/invalid) and next-line indent."""
    if code.lstrip().startswith("%%"):  # cell magic: a blank line ends it
        lines = code.splitlines() or [""]
        done = not lines[-1].strip()
        return {"completeness": "complete" if done else "incomplete", "indent": ""}
    if "!" in code:
        code = transform_shell_lines(code)
    last = code.split("\n")[-1]
    indent = last[: len(last) - len(last.lstrip())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compiled = codeop.compile_command(code, "<input>", "exec")
        except (SyntaxError, OverflowError, ValueError):
            return {"completeness": "invalid", "indent": ""}
    if compiled is None:
        extra = "    " if last.rstrip().endswith(":") else ""
        return {"completeness": "incomplete", "indent": indent + extra}
    if indent and last.strip():  # an indented block goes on until a blank line
        return {"completeness": "incomplete", "indent": indent}
    return {"completeness": "complete", "indent": ""}


# --- stdin for cells ---------------------------------------------------------------------------


class InputStream(io.TextIOBase):
    """``sys.stdin`` for cells: each line is asked from the frontend with ``input_request``.

    ``ask(prompt, password)`` returns the reply, or None when the host has no input to give
    (then reads return "" like end of file).
    """

    encoding = "utf-8"

    def __init__(self, ask) -> None:
        super().__init__()
        self._ask = ask
        self._pending = ""

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        if not self._pending:
            reply = self._ask("", False)
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


# --- matplotlib --------------------------------------------------------------------------------


class AfterImportHook:
    """Meta-path finder that calls ``hook(module)`` right after ``fullname`` is executed."""

    def __init__(self, fullname: str, hook) -> None:
        self._fullname = fullname
        self._hook = hook

    def find_spec(self, fullname, path, target=None):
        if fullname != self._fullname:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _HookedLoader(spec.loader, self._hook)
        return spec


class _HookedLoader:
    """Wraps a loader: runs the hook after the module body ran; everything else is delegated."""

    def __init__(self, loader, hook) -> None:
        self._loader = loader
        self._hook = hook

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        self._hook(module)


def _matplotlib_available() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


# --- the pump: output pipes in, every frame out ------------------------------------------------


class Pump:
    """Writes every frame, under one lock; its thread forwards fds 1 and 2 as ``stream`` frames.

    Frames posted by any thread are written in order, each after draining the output pipes, so
    output written before a post precedes the posted frame. The main thread posts while
    user code runs (a KeyboardInterrupt can then land anywhere, but never inside a write) and
    writes ``done`` itself through ``finish``, once no interrupt can arrive any more.
    """

    def __init__(self, out_fd: int, stdout_r: int, stderr_r: int) -> None:
        self.tag: str | None = None  # id of the running execute, for stream frames
        self._out = out_fd
        self._lock = threading.Lock()
        self._streams = {
            stdout_r: ("stdout", codecs.getincrementaldecoder("utf-8")("replace")),
            stderr_r: ("stderr", codecs.getincrementaldecoder("utf-8")("replace")),
        }
        self._items: collections.deque = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def post(self, frame: bytes, wait: bool = False) -> None:
        """Queue ``frame`` for the pump thread; with ``wait``, return once it is written, so
        output written later cannot overtake it."""
        written = threading.Event() if wait else None
        self._items.append((frame, written))
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass
        if written is not None:
            written.wait()

    def finish(self, frame: bytes) -> None:
        """Write the posted frames, all output so far, then ``frame``; reset the tag.

        Called by the main thread only outside the interrupt window.
        """
        with self._lock:
            self._serve_items()
            self._drain()
            for name, decoder in self._streams.values():  # end half-received UTF-8 sequences
                self._send_text(name, decoder.decode(b"", final=True))
            self._write(frame)
            self.tag = None

    def flush(self) -> None:
        """Write the posted frames and the output so far."""
        with self._lock:
            self._serve_items()
            self._drain()

    def run(self) -> None:
        """Thread body: forward output as it comes, write posted frames."""
        busy = False
        while True:
            ready = select.select([*self._streams, self._wake_r], [], [])[0]
            if self._wake_r not in ready and not busy:
                # Let the rest of a burst arrive (print writes its pieces separately), so it
                # travels as one frame; a post ends the wait at once.
                select.select([self._wake_r], [], [], LINGER)
            with self._lock:
                try:
                    os.read(self._wake_r, CHUNK)
                except BlockingIOError:
                    pass
                self._serve_items()
                busy = self._drain() >= CHUNK

    def _serve_items(self) -> None:
        while self._items:
            frame, written = self._items.popleft()
            self._drain()
            self._write(frame)
            if written is not None:
                written.set()

    def _write(self, frame: bytes) -> None:
        try:
            _write_all(self._out, frame)
        except OSError:  # the host is gone: nobody left to talk to
            os._exit(0)

    def _forward(self, fd: int) -> int:
        """Send one chunk of what output pipe ``fd`` holds; return its size in bytes."""
        name, decoder = self._streams[fd]
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return 0
        if not data:  # every write end was closed by user code
            del self._streams[fd]
        self._send_text(name, decoder.decode(data))
        return len(data)

    def _send_text(self, name: str, text: str) -> None:
        if text:
            frame = {"type": "stream", "id": self.tag, "name": name, "text": text}
            self._write(encode_frame(frame))

    def _drain(self) -> int:
        """Forward what the output pipes hold right now; return the number of bytes."""
        total = 0
        for _ in range(DRAIN_READS):
            ready = select.select(list(self._streams), [], [], 0)[0]
            if not ready:
                break
            for fd in ready:
                total += self._forward(fd)
        return total


# --- the runner --------------------------------------------------------------------------------


class RequestFailed(Exception):
    """A request the runner answers with ``done`` status "error" and this message."""


def redirect_fds() -> tuple[int, int, int, int, int]:
    """Take private copies of fds 0, 1, 2; point 0 at /dev/null and 1, 2 at new pipes.

    Returns (protocol in, protocol out, diagnostics, stdout pipe, stderr pipe). ``os.dup`` makes
    the copies close-on-exec, so child processes never see the protocol.
    """
    proto_in, proto_out, diag = os.dup(0), os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    readers = []
    for fd in (1, 2):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        os.set_blocking(read_end, False)
        readers.append(read_end)
    return proto_in, proto_out, diag, readers[0], readers[1]


class Runner:
    """Runs requests from the host against one persistent user namespace."""

    def __init__(self, proto_in: int, proto_out: int, diag: int, out_r: int, err_r: int):
        self._in = proto_in
        self._diag = diag
        self._pump = Pump(proto_out, out_r, err_r)
        self._main_ident = threading.get_ident()
        self._state_lock = threading.Lock()
        self._interruptible = False  # user code is running: an interrupt may be sent
        self._interrupted = False  # a SIGINT was sent in the current window
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._replies: queue.SimpleQueue = queue.SimpleQueue()
        self._active_id: str | None = None
        self._count = 0
        self._hidden_cells = 0
        self._matplotlib = _matplotlib_available()
        self._handlers = {
            "complete": self._complete,
            "inspect": self._inspect,
            "is_complete": lambda req: is_complete(req["code"]),
            "push": self._push,
            "pull": self._pull,
        }
        self._ns = self._install()

    # -- setup --

    def _install(self) -> dict:
        """Replace stdio, builtins hooks and ``__main__``; return the user namespace."""
        sys.stdout = self._text_stream(1)
        sys.stderr = self._text_stream(2)
        sys.stdin = InputStream(self._ask)
        builtins.display = self.display
        builtins.update_display = self.update_display
        builtins.clear_output = self.clear_output
        builtins.input = self._input
        setattr(builtins, SHELL_HELPER, self._shell_line)
        getpass.getpass = self._getpass
        if self._matplotlib:
            os.environ.setdefault("MPLBACKEND", "Agg")
            sys.meta_path.insert(0, AfterImportHook("matplotlib.pyplot", self._patch_pyplot))
        user = types.ModuleType("__main__")
        user.__dict__["__builtins__"] = builtins
        self._runner_module = sys.modules.get("__main__")  # keeps the runner's globals alive
        sys.modules["__main__"] = user
        return user.__dict__

    @staticmethod
    def _text_stream(fd: int) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(raw, "utf-8", "backslashreplace", write_through=True)

    def serve(self) -> None:
        """Start the threads, announce ``ready``, then run requests forever."""
        faulthandler.enable(io.FileIO(self._diag, "w", closefd=False))
        _guarded_thread("agentkernel-pump", self._pump.run, self._diag).start()
        _guarded_thread("agentkernel-requests", self._read_requests, self._diag).start()
        self._pump.post(
            encode_frame(
                {
                    "type": "ready",
                    "python": "{}.{}.{}".format(*sys.version_info[:3]),
                    "implementation": sys.implementation.name,
                    "matplotlib": self._matplotlib,
                    "pid": os.getpid(),
                }
            )
        )
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
            with self._state_lock:
                if self._interruptible:
                    self._interrupted = True
                    signal.pthread_kill(self._main_ident, signal.SIGINT)
        elif kind == "input_reply":
            self._replies.put(frame)
        elif kind == "shutdown":
            self._exit(0)
        else:
            self._requests.put(frame)

    def _exit(self, code: int) -> None:
        """Exit once the frames queued so far are written (or after EXIT_GRACE seconds)."""
        threading.Timer(EXIT_GRACE, os._exit, (code,)).start()
        self._pump.flush()
        os._exit(code)

    def _log(self, level: str, message: str) -> None:
        self._pump.post(encode_frame({"type": "log", "level": level, "message": message}))

    # -- interrupts --

    def _set_interruptible(self, on: bool) -> None:
        with self._state_lock:
            self._interruptible = on

    def _quiesce(self) -> None:
        """Close the interrupt window and absorb a SIGINT that raced its closing."""
        with self._state_lock:
            self._interruptible = False
            interrupted, self._interrupted = self._interrupted, False
        if interrupted:
            try:
                # A syscall: a pending SIGINT is delivered on its return, then handlers run.
                signal.pthread_sigmask(signal.SIG_BLOCK, ())
            except BaseException:
                pass

    def _guarded(self, rid: str, func) -> bool:
        """Run user-facing ``func`` interruptibly; report its exception; True when it ran ok."""
        self._set_interruptible(True)
        try:
            func()
        except BaseException as exc:
            self._quiesce()
            self._send_error(rid, exc)
            return False
        self._quiesce()
        return True

    # -- requests --

    def _handle(self, request: dict) -> None:
        """Run one request; whatever happens, answer it with ``done``."""
        kind, rid = request["type"], request.get("id")
        try:
            if kind == "execute":
                fields = self._execute(request)
            elif kind in self._handlers:
                fields = self._handlers[kind](request)
                fields["status"] = "ok"
            else:
                raise RequestFailed(f"unknown request type {kind!r}")
        except RequestFailed as exc:
            fields = {"status": "error", "error": str(exc)}
        except (Exception, KeyboardInterrupt) as exc:
            self._quiesce()
            self._log("error", f"{kind} request failed:\n{traceback.format_exc()}")
            fields = {"status": "error", "error": f"runner failure: {type(exc).__name__}: {exc}"}
        self._active_id = None
        self._pump.finish(encode_frame({"type": "done", "id": rid, **fields}))

    def _execute(self, request: dict) -> dict:
        rid = request["id"]
        silent = bool(request.get("silent", False))
        counted = bool(request.get("store_history", True)) and not silent
        if counted:
            self._count += 1
            filename = f"<cell-{self._count}>"
        else:
            self._hidden_cells += 1
            filename = f"<hidden-cell-{self._hidden_cells}>"
        self._active_id = self._pump.tag = rid
        status = self._run_cell(rid, request["code"], filename, silent, counted)
        _flush_std()
        return {"status": status, "execution_count": self._count}

    def _run_cell(self, rid: str, code: str, filename: str, silent: bool, counted: bool) -> str:
        """Compile and run one cell, then show open figures; return the ``done`` status."""
        try:
            run = self._prepare(code, filename, silent, counted)
        except (SyntaxError, ValueError, OverflowError) as exc:  # ValueError: NUL bytes
            self._send_error(rid, exc)
            return "error"
        ran = self._guarded(rid, run)
        shown = "matplotlib.pyplot" not in sys.modules or self._guarded(rid, self._show_figures)
        return "ok" if ran and shown else "error"

    def _prepare(self, code: str, filename: str, silent: bool, counted: bool):
        """Compile ``code``; return a no-argument callable that runs it."""
        shell = cell_magic_shell(code) if code.lstrip().startswith("%%") else None
        if shell is not None:
            return lambda: self._run_script(*shell)
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        source = transform_shell_lines(code) if "!" in code else code
        tree = ast.parse(source, filename)
        last = None
        tail = tree.body[-1] if tree.body and not silent else None
        if isinstance(tail, ast.Expr) and not _ends_with_semicolon(source, tail):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
        body = compile(tree, filename, "exec")
        return lambda: self._run_code(body, last, counted)

    def _run_code(self, body, last, counted: bool) -> None:
        ns = self._ns
        exec(body, ns)
        if last is not None:
            value = eval(last, ns)
            if value is not None:
                self._show_result(value, counted)

    def _show_result(self, value: object, counted: bool) -> None:
        """Send ``value`` as the cell's result and remember it as ``_`` (and ``_N``)."""
        data, metadata = mime_bundle(value)
        self._post_output(
            {
                "type": "result",
                "id": self._active_id,
                "execution_count": self._count,
                "data": data,
                "metadata": metadata,
            },
            wait=False,  # the cell's code is over: no output of it can overtake the result
        )
        ns = self._ns
        ns["___"], ns["__"], ns["_"] = ns.get("__", ""), ns.get("_", ""), value
        if counted:
            ns[f"_{self._count}"] = value

    def _send_error(self, rid: str, exc: BaseException) -> None:
        lines = format_user_exception(exc, self._ns)
        sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, exc.__traceback__
        sys.last_exc = exc  # pdb.pm() looks here on Python 3.12+
        try:
            evalue = str(exc)
        except Exception:
            evalue = "<str() of the exception failed>"
        frame = {"type": "error", "id": rid, "ename": type(exc).__name__, "evalue": evalue}
        frame["traceback"] = lines
        self._pump.post(encode_frame(frame))

    def _post_output(self, frame: dict, wait: bool) -> None:
        """Send a display/result frame (see Pump.post for ``wait``); a frame that cannot be
        encoded becomes a warning."""
        try:
            data = encode_frame(frame)
        except (ProtocolError, TypeError, ValueError) as exc:
            _warn(f"{frame['type']} output dropped: {exc}")
            return
        self._pump.post(data, wait)

    def _complete(self, request: dict) -> dict:
        code, pos = request["code"], request["cursor_pos"]
        token = _name_before(code, pos)
        return {
            "matches": completions(self._ns, token),
            "cursor_start": pos - len(token),
            "cursor_end": pos,
            "metadata": {},
        }

    def _inspect(self, request: dict) -> dict:
        name = name_at(request["code"], request["cursor_pos"])
        try:
            obj = self._lookup(name)
        except LookupError:
            return {"found": False, "data": {}, "metadata": {}}
        text = describe(obj, name, int(request.get("detail_level", 0)))
        return {"found": True, "data": {"text/plain": text}, "metadata": {}}

    def _lookup(self, name: str) -> object:
        """Evaluate a dotted name (no calls) in the user namespace; LookupError if it fails."""
        parts = name.split(".")
        if not all(part.isidentifier() for part in parts):
            raise LookupError(name)
        if parts[0] in self._ns:
            obj = self._ns[parts[0]]
        elif hasattr(builtins, parts[0]):
            obj = getattr(builtins, parts[0])
        else:
            raise LookupError(name)
        for part in parts[1:]:
            try:
                obj = getattr(obj, part)
            except Exception:
                raise LookupError(name) from None
        return obj

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
        self._ns.update(values)
        return {}

    def _pull(self, request: dict) -> dict:
        values, problems = {}, []
        for name in request["names"]:
            if name not in self._ns:
                problems.append(f"name {name!r} is not defined")
                continue
            try:
                data = pickle.dumps(self._ns[name])
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

    # -- services for user code --

    def display(self, *objs, raw=False, metadata=None, display_id=None, update=False):
        """Show objects as rich output, like ``IPython.display.display``.

        ``raw=True`` takes each object as a ready mime bundle. ``display_id`` (``True`` for a
        new one) names the output so it can be updated; then a DisplayHandle is returned.
        """
        if display_id is True:
            display_id = os.urandom(16).hex()
        _flush_std()
        for obj in objs:
            data, extra = (dict(obj), {}) if raw else mime_bundle(obj)
            self._post_output(
                {
                    "type": "display",
                    "id": self._active_id,
                    "data": data,
                    "metadata": {**extra, **(metadata or {})},
                    "transient": {"display_id": display_id} if display_id else {},
                    "update": bool(update),
                },
                wait=True,  # the cell goes on printing: keep this display in its place
            )
        return DisplayHandle(self.display, display_id) if display_id else None

    def update_display(self, obj, *, display_id, **kwargs) -> None:
        """Replace the outputs shown with ``display_id`` by ``obj``."""
        self.display(obj, display_id=display_id, update=True, **kwargs)

    def clear_output(self, wait: bool = False) -> None:
        """Clear the cell's output, like ``IPython.display.clear_output`` (``wait``: at the
        next output)."""
        _flush_std()
        frame = {"type": "clear_output", "id": self._active_id, "wait": bool(wait)}
        self._post_output(frame, wait=True)

    def _ask(self, prompt: str, password: bool) -> str | None:
        """Ask the frontend for a line; None when the host has none to give."""
        if self._active_id is None:
            raise EOFError("input is only available while a cell runs")
        _flush_std()
        while True:  # drop replies to requests that were interrupted
            try:
                self._replies.get_nowait()
            except queue.Empty:
                break
        frame = {"type": "input_request", "id": self._active_id, "prompt": prompt}
        frame["password"] = password
        self._pump.post(encode_frame(frame))
        reply = self._replies.get()
        return None if reply.get("eof") else str(reply.get("value", ""))

    def _input(self, prompt: object = "") -> str:
        """``input()`` for cells: the prompt and the reply travel to and from the frontend."""
        reply = self._ask(str(prompt), False)
        if reply is None:
            raise EOFError("EOF when reading a line")
        return reply

    def _getpass(self, prompt: str = "Password: ", stream=None) -> str:
        """``getpass.getpass()`` for cells: asks the frontend for a hidden reply."""
        reply = self._ask(prompt, True)
        if reply is None:
            raise EOFError("EOF when reading a password")
        return reply

    def _shell_line(self, command: str) -> None:
        """Run one ``!command`` line; its exit status goes to ``_exit_code`` (not an error)."""
        self._ns["_exit_code"] = self._run_shell(["/bin/sh", "-c", command])

    def _run_script(self, shell: str, script: str) -> None:
        """Run a ``%%sh`` / ``%%bash`` cell; a nonzero exit raises CalledProcessError."""
        code = self._run_shell([shell, "-c", script])
        if code:
            raise subprocess.CalledProcessError(code, script.strip())

    @staticmethod
    def _run_shell(argv: list[str]) -> int:
        """Run ``argv`` in its own process group with our fds 1 and 2; return its exit status.

        On KeyboardInterrupt the group gets SIGINT, then SIGKILL after one second.
        """
        _flush_std()
        proc = subprocess.Popen(argv, start_new_session=True)
        try:
            return proc.wait()
        except BaseException:
            _stop_group(proc)
            raise

    # -- matplotlib --

    def _patch_pyplot(self, pyplot) -> None:
        """Make ``plt.show()`` show the open figures inline and close them."""

        def show(*args, **kwargs) -> None:
            self._show_figures()

        pyplot.show = show

    def _show_figures(self) -> None:
        """Send every open pyplot figure as a PNG display, then close them all."""
        pyplot = sys.modules["matplotlib.pyplot"]
        try:
            for num in pyplot.get_fignums():
                self._show_figure(pyplot.figure(num))
        finally:
            pyplot.close("all")

    def _show_figure(self, figure) -> None:
        buf = io.BytesIO()
        try:
            figure.canvas.print_figure(buf, format="png", bbox_inches="tight")
        except Exception as exc:
            _warn(f"cannot render {_safe_repr(figure)}: {type(exc).__name__}: {exc}")
            return
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        self.display({"image/png": png, "text/plain": _safe_repr(figure)}, raw=True)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT the process group of ``proc``; SIGKILL it if the leader is not gone in 1 s."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    except ProcessLookupError:
        pass


def main() -> None:
    """Entry point inside the container."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    Runner(*redirect_fds()).serve()


if __name__ == "__main__":
    main()
