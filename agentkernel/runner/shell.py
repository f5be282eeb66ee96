"""The IPython shell inside the sandbox: ipykernel's ZMQInteractiveShell, on our frames.

ipykernel itself cannot go into every image (it needs pyzmq and tornado, which are compiled), so
this module does for the runner what ipykernel's ``zmqshell.py``, ``displayhook.py``,
``compiler.py`` and ``ipkernel.py`` do for a local kernel, with IPython's own machinery: the
display publisher sends ``display``/``clear_output`` frames, the display hook sends ``result``,
``show_traceback_lines`` sends ``error`` with IPython's formatted lines, the pager and
``set_next_input`` write payloads returned with the execute's ``done``, ``input()`` and
``getpass`` ask the frontend (or raise StdinNotImplementedError when it cannot answer).

The shell talks to the runner through a ``transport`` with four methods: ``output(frame)``,
``ask(prompt, password)``, ``parent()`` (the Jupyter header of the request being run) and
``enter_user_code()`` / ``leave_user_code()`` (the window in which an interrupt may land).
"""

from __future__ import annotations

import builtins
import getpass
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from IPython.core import page
from IPython.core.autocall import ZMQExitAutocall
from IPython.core.compilerop import CachingCompiler
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.interactiveshell import InteractiveShellABC
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magics import MacroToEdit
from IPython.display import Javascript, display
from IPython.utils import openpy
from IPython.utils.process import system
from traitlets import Any, CBool, Instance, Type, default
from traitlets.config import Config

from .ipython_compat import HookedShell, find_edit_target, validate_display
from .kernel_api import SandboxKernel

HASH_SEED = 0xC70F6907  # ipykernel.compiler.get_tmp_hash_seed()
# Characters of a cell's stdout (and as many of its stderr) that IPython's output history keeps;
# each write counts at least TEE_WRITE_COST, the memory a kept string costs beyond its text.
TEE_LIMIT = 1024 * 1024
TEE_WRITE_COST = 64


def flush_std() -> None:
    """Flush sys.stdout and sys.stderr (the user may have replaced them)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


# --- cell file names, as ipykernel's XCachingCompiler gives them ------------------------------


def murmur2_x86(data: str, seed: int) -> int:
    """32-bit MurmurHash2 of ``data``'s UTF-8 bytes: ipykernel names cells by it."""
    key = data.encode("utf-8")
    m = 0x5BD1E995
    h = (seed ^ len(key)) & 0xFFFFFFFF
    end = len(key) & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[end:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def cell_filename(code: str) -> str:
    """The file name ipykernel gives a cell: ``<tmp>/ipykernel_<pid>/<murmur2>.py``, so
    tracebacks and SyntaxError messages read as they do on a local kernel."""
    named = os.environ.get("IPYKERNEL_CELL_NAME")
    if named is not None:
        return named
    folder = os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}")
    return os.path.join(folder, f"{murmur2_x86(code, HASH_SEED)}.py")


class CellCompiler(CachingCompiler):
    """IPython's caching compiler with ipykernel's cell names."""

    def get_code_name(self, raw_code, code, number):
        return cell_filename(raw_code)


# --- output: display publisher and display hook -------------------------------------------------


class FrameDisplayPublisher(DisplayPublisher):
    """``display()``, ``update_display`` and ``clear_output`` as frames."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                **kwargs):
        """Send a ``display`` frame (an update of ``transient['display_id']`` if ``update``)."""
        flush_std()
        validate_display(self, data, metadata)
        self.shell.transport.output({
            "type": "display",
            "data": data,
            "metadata": metadata or {},
            "transient": transient or {},
            "update": bool(update),
        })

    def clear_output(self, wait=False):
        """Clear the cell's output (``wait``: at its next output)."""
        flush_std()
        self.shell.transport.output({"type": "clear_output", "wait": bool(wait)})


class FrameDisplayHook(DisplayHook):
    """The value of a cell's last expression as a ``result`` frame (ZMQShellDisplayHook)."""

    frame = Any(None, allow_none=True)

    def start_displayhook(self):
        self.frame = {"type": "result", "data": {}, "metadata": {}}

    def write_output_prompt(self):
        if self.frame is not None:
            self.frame["execution_count"] = self.prompt_count

    def write_format_data(self, format_dict, md_dict=None):
        if self.frame is not None:
            self.frame["data"] = format_dict
            self.frame["metadata"] = md_dict or {}

    def finish_displayhook(self):
        flush_std()
        frame, self.frame = self.frame, None
        if frame is not None and frame["data"]:
            self.shell.transport.output(frame)


# --- magics of ipykernel's KernelMagics that matter in a notebook ----------------------------


@magics_class
class KernelMagics(Magics):
    """The line magics ipykernel redefines for a frontend that is not a terminal."""

    @line_magic
    def edit(self, parameter_s="", last_call=None):
        """Open a file in the frontend's editor (a payload), as ipykernel's ``%edit`` does."""
        last_call = last_call or ["", ""]
        opts, args = self.parse_options(parameter_s, "prn:")
        try:
            filename, lineno, _ = find_edit_target(self.shell, args, opts, last_call)
        except MacroToEdit:
            print("Macro editing not yet implemented in 2-process model.")
            return
        payload = {"source": "edit_magic", "filename": str(Path(filename).resolve()),
                   "line_number": lineno}
        self.shell.payload_manager.write_payload(payload)

    @line_magic
    def clear(self, arg_s):
        """Clear the terminal."""
        self.shell.system("clear")

    @line_magic
    def less(self, arg_s):
        """Show a file through the pager. Files ending in .py are syntax-highlighted."""
        if not arg_s:
            raise UsageError("Missing filename.")
        if arg_s.endswith(".py"):
            cont = self.shell.pycolorize(openpy.read_py_file(arg_s, skip_encoding_cookie=False))
        else:
            with open(arg_s) as fid:
                cont = fid.read()
        page.page(cont)

    more = line_magic("more")(less)

    @line_magic
    def man(self, arg_s):
        """Find the man page for the given command and display in pager."""
        page.page(self.shell.getoutput(f"man {arg_s} | col -b", split=False))

    @line_magic
    def autosave(self, arg_s):
        """Set the autosave interval in the notebook (in seconds); 0 disables it."""
        try:
            interval = int(arg_s)
        except ValueError as e:
            raise UsageError(f"%autosave requires an integer, got {arg_s!r}") from e
        display(Javascript(f"IPython.notebook.set_autosave_interval({1000 * interval})"),
                include=["application/javascript"])
        print(f"Autosaving every {interval} seconds" if interval else "Autosave disabled")


# --- the shell ----------------------------------------------------------------------------------


class ZMQInteractiveShell(HookedShell):
    """The shell cells run in. Named as ipykernel's, because libraries tell a notebook from a
    terminal by ``get_ipython().__class__.__name__ == "ZMQInteractiveShell"``."""

    displayhook_class = Type(FrameDisplayHook)
    display_pub_class = Type(FrameDisplayPublisher)
    kernel = Any()
    transport = Any()
    readline_use = CBool(False)
    autoindent = CBool(False)
    exiter = Instance(ZMQExitAutocall)
    keepkernel_on_exit = None

    @default("exiter")
    def _default_exiter(self):
        return ZMQExitAutocall(self)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # as ipykernel does: tqdm.autonotebook tells a notebook by this config section
        if "IPKernelApp" not in self.config:
            self.config.IPKernelApp.tqdm = "dummy value for https://github.com/tqdm/tqdm/pull/1628"
        self._last_traceback = None
        self._last_traceback_during_displayhook = False
        self._shell_started = True

    # -- the completer, made on first use ---------------------------------------------------
    # IPython makes its completer as the shell starts; that module imports jedi: 35-45 ms of a
    # runner's start (0.2 s), which a kernel's first result waits for. Here it is made at its
    # first use: a completion or inspection, ``%config`` (which lists and configures the
    # shell's ``configurables``), or code that reads ``get_ipython().Completer``. What
    # ``%config`` set before then is in the shell's config, which the completer reads.

    def init_completer(self):
        self._completer_lock = threading.RLock()
        self._completer_made = False

    @property
    def Completer(self):
        self._make_completer()
        return self.__dict__["Completer"]

    @Completer.setter
    def Completer(self, completer):
        self.__dict__["Completer"] = completer

    @property
    def configurables(self):
        if self.__dict__.get("_shell_started"):  # not while IPython's own start adds to the list
            self._make_completer()
        return self.__dict__["configurables"]

    @configurables.setter
    def configurables(self, configurables):
        self.__dict__["configurables"] = configurables

    def _make_completer(self):
        """IPython's ``init_completer``, once (it reads ``self.Completer`` it has just set)."""
        if self._completer_made:
            return
        with self._completer_lock:
            if self._completer_made:
                return
            self._completer_made = True
            try:
                super().init_completer()
            except BaseException:
                self._completer_made = False
                raise

    def enable_gui(self, gui=None):
        """No GUI event loop can run in a sandbox; ``inline`` needs none."""
        if gui not in (None, "inline"):
            raise UsageError(f"GUI event loops ({gui}) are not available in a sandbox; "
                             "use %matplotlib inline")
        self.active_eventloop = gui

    def init_environment(self):
        """As ipykernel: colours on, pagers off for child processes."""
        env = os.environ
        env["TERM"] = "xterm-color"
        env["CLICOLOR"] = "1"
        env["FORCE_COLOR"] = "1"
        env["CLICOLOR_FORCE"] = "1"
        env["PAGER"] = "cat"
        env["GIT_PAGER"] = "cat"

    def init_virtualenv(self):
        """No virtualenv detection in a kernel."""

    def init_hooks(self):
        super().init_hooks()
        self.set_hook("show_in_pager", page.as_hook(self.payloadpage_page), 99)

    def init_magics(self):
        super().init_magics()
        self.register_magics(KernelMagics)
        self.magics_manager.register_alias("ed", "edit")

    def payloadpage_page(self, strg, start=0, screen_lines=0, pager_cmd=None):
        """The pager (``obj?``, ``%less``...) as a ``page`` payload of the execute reply."""
        data = strg if isinstance(strg, dict) else {"text/plain": strg}
        self.payload_manager.write_payload({"source": "page", "data": data,
                                            "start": max(0, start)})

    def ask_exit(self):
        """``exit``: the kernel is asked to end (a payload of the execute reply)."""
        self.exit_now = not self.keepkernel_on_exit
        self.payload_manager.write_payload({"source": "ask_exit",
                                            "keepkernel": self.keepkernel_on_exit})

    def set_next_input(self, text, replace=False):
        """Put ``text`` in the frontend's next input cell (a payload)."""
        self.payload_manager.write_payload({"source": "set_next_input", "text": text,
                                            "replace": replace})

    @contextmanager
    def keeping_output(self, channel, keep):
        """IPython 9 keeps every write of a cell to sys.stdout/stderr in its output history
        (``history_manager.outputs``): a loop printing as fast as it can filled the sandbox's
        memory with them. Here a cell's writes are kept until they cost TEE_LIMIT, then
        written without being kept, so a flood stays bounded whatever its rate."""
        stream = getattr(sys, channel)
        plain = stream.write
        with keep():
            keeping = stream.write
            kept = 0

            def write(data, *args, **kwargs):
                nonlocal kept
                kept += max(len(data) if isinstance(data, str) else 0, TEE_WRITE_COST)
                return (keeping if kept <= TEE_LIMIT else plain)(data, *args, **kwargs)

            stream.write = write
            yield

    def run_cell(self, *args, **kwargs):
        self._last_traceback = None
        self._last_traceback_during_displayhook = False
        return super().run_cell(*args, **kwargs)

    async def run_code(self, code_obj, result=None, *, async_=False):
        """Run compiled user code with the interrupt window open.

        An interrupt that lands after the user's code ended but before the window closed is
        still the cell's interrupt: it is reported as the cell's error.
        """
        try:
            self.transport.enter_user_code()
            try:
                return await super().run_code(code_obj, result, async_=async_)
            finally:
                self.transport.leave_user_code()
        except KeyboardInterrupt as exc:
            if result is not None:
                result.error_in_exec = exc
            self.showtraceback()
            return True

    def show_traceback_lines(self, etype, evalue, stb):
        """An ``error`` frame with IPython's formatted traceback, as ipykernel sends it."""
        flush_std()
        if self.displayhook.frame is not None:
            self._last_traceback_during_displayhook = True  # the cell failed while showing
        self.transport.output({
            "type": "error",
            "ename": str(etype.__name__),
            "evalue": str(evalue),
            "traceback": [str(line) for line in stb],
        })
        self._last_traceback = stb

    def system_piped(self, cmd):
        """``!cmd``: its output through a pty as IPython shows it; the exit code in
        ``_exit_code`` (with ``system_raise_on_error``, a failure raises)."""
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        exit_code = system(self.var_expand(cmd, depth=1))
        self.user_ns["_exit_code"] = exit_code
        if getattr(self, "system_raise_on_error", False) and exit_code != 0:
            from subprocess import CalledProcessError

            raise CalledProcessError(exit_code, cmd)

    system = system_piped


InteractiveShellABC.register(ZMQInteractiveShell)


def _interruptible_pdb() -> None:
    """``pdb`` as IPython's interruptible debugger, as ipykernel installs it."""
    import pdb

    from IPython.core import debugger

    if hasattr(debugger, "InterruptiblePdb"):
        debugger.Pdb = debugger.InterruptiblePdb
        pdb.Pdb = debugger.Pdb
        pdb.set_trace = debugger.set_trace


def _default_matplotlib_backend() -> None:
    """The inline backend by default, as ipykernel sets it (when matplotlib-inline is here)."""
    import importlib.util

    if os.environ.get("MPLBACKEND"):
        return
    try:
        found = importlib.util.find_spec("matplotlib_inline") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"


def make_shell(transport) -> ZMQInteractiveShell:
    """The shell singleton (``get_ipython()``) on ``transport``, with history in memory."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    _default_matplotlib_backend()
    _interruptible_pdb()
    shell = ZMQInteractiveShell.instance(config=config, user_ns={}, transport=transport,
                                         compiler_class=CellCompiler)
    shell.kernel = SandboxKernel(transport, shell)
    builtins.input = shell.kernel.raw_input
    getpass.getpass = shell.kernel.getpass
    return shell


__all__ = ["StdinNotImplementedError", "ZMQInteractiveShell", "flush_std", "make_shell"]
