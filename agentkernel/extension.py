"""The IPython extension: ``%load_ext agentkernel`` gives any IPython session or notebook a sandbox.

The magics are parsed by :mod:`agentkernel.commands` and carried out by a
:class:`~agentkernel.manager.SandboxManager`, exactly as in the AgentKernel kernel; this module
only maps them onto IPython. ``%%sandbox`` cells run in the IPython of the sandbox's persistent
runner, so their globals live there and never in the host namespace. Runner events become IPython
output: streams go to ``sys.stdout`` / ``sys.stderr`` as they arrive, displays go through
IPython's display publisher and the cell's result is the magic's return value (``Out[n]``).
Failures raise a :class:`SandboxFailure`, which IPython shows as the given lines alone and which
fails the cell (papermill stops there).

Configuration comes from the shell's config (``ipython_config.py``) on top of
``agentkernel_config.py``: ``c.SandboxConfig.image = ...``, ``c.SandboxMagics.max_transfer_mb``.
"""

from __future__ import annotations

import atexit
import functools
import getpass
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core import page
from IPython.core.error import StdinNotImplementedError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.display import clear_output, publish_display_data
from traitlets import Int, observe
from traitlets.config import Config

from . import command_handlers, commands
from .config import SandboxConfig, load_config_files
from .config.files import load_config_file
from .config.policy import POLICY_ENV, SandboxPolicy
from .errors import SandboxError
from .frontend import ErrorReport, StreamText, outgoing_bundle, outgoing_text
from .manager import SandboxManager

log = logging.getLogger(__name__)


class SandboxFailure(Exception):
    """A failed magic or sandbox cell; IPython shows ``lines`` instead of a host traceback."""

    def __init__(self, evalue: str, lines: list[str]) -> None:
        super().__init__(evalue)
        self.lines = lines

    def _render_traceback_(self) -> list[str]:
        """What IPython prints (and ipykernel sends as the error's traceback)."""
        return self.lines


@functools.cache
def _failure_type(ename: str) -> type[SandboxFailure]:
    """A SandboxFailure subclass named ``ename``: frontends and papermill show that name."""
    return type(ename, (SandboxFailure,), {"__module__": __name__})


def failure(report: ErrorReport) -> SandboxFailure:
    """The exception that reports ``report``: named as its error, shown as its lines."""
    return _failure_type(report.ename)(report.evalue, list(report.traceback))


class SandboxResult:
    """The value of a ``%%sandbox`` cell's last expression, as the sandbox rendered it.

    Only its representations cross over; ``%sandbox pull NAME`` copies a value itself.
    """

    def __init__(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.data = data
        self.metadata = metadata

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        """The sandbox's mime bundle, for notebooks."""
        return self.data, self.metadata

    def __repr__(self) -> str:
        """The sandbox's ``text/plain``, for terminals."""
        return str(self.data.get("text/plain", ""))


class _CellRun:
    """Shows the events of one ``%%sandbox`` cell and keeps its result and error."""

    def __init__(self, trusted: bool = False) -> None:
        self.result: SandboxResult | None = None
        self.error: dict[str, Any] | None = None
        self.trusted = trusted  # the operator's policy trusts sandbox output
        self.streams = StreamText()  # colour codes split between stream events

    def on_event(self, event: dict[str, Any]) -> None:
        """Show a stream or display event now; keep the result and the error for the end."""
        kind = event["type"]
        if kind == "stream":
            write(event["name"], self.streams.feed(event["name"], event["text"]))
        elif kind == "display":
            data, metadata = outgoing_bundle(event["data"], event.get("metadata"), self.trusted)
            publish_display_data(data, metadata, transient=event.get("transient") or {},
                                 update=bool(event.get("update")))
        elif kind == "clear_output":
            clear_output(wait=bool(event.get("wait")))
        elif kind == "result":
            self.result = SandboxResult(*outgoing_bundle(event["data"], event.get("metadata"),
                                                         self.trusted))
        elif kind == "error":
            self.error = event


def write(name: str, text: str) -> None:
    """Write sandbox output to the host's current ``sys.stdout`` or ``sys.stderr``, now."""
    stream = sys.stderr if name == "stderr" else sys.stdout
    stream.write(outgoing_text(text))
    stream.flush()


def ask(prompt: str, password: bool) -> str:
    """Answer ``input()`` / ``getpass()`` in a sandbox cell from the host's user.

    A frontend that cannot ask (a notebook run by papermill) gives the cell an EOFError.
    """
    try:
        return getpass.getpass(prompt) if password else input(prompt)
    except StdinNotImplementedError:
        raise EOFError(prompt) from None


def shell_config(shell: InteractiveShell) -> Config:
    """``agentkernel_config`` files overlaid with the shell's own config, then the policy file
    named by AGENTKERNEL_POLICY (the operator's word is last)."""
    merged = load_config_files()
    merged.merge(shell.config)
    named = os.environ.get(POLICY_ENV)
    if named:
        merged.merge(load_config_file(Path(named)))
    return merged


@magics_class
class SandboxMagics(Magics):
    """``%sandbox``, ``%%sandbox``, ``%sandbox_exec`` and ``%%sandbox_file`` for IPython."""

    max_transfer_mb = Int(
        64, help="Largest pickled value %sandbox push copies into the sandbox, in MB."
    ).tag(config=True)

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell=shell)
        config = shell_config(shell)
        self.manager = SandboxManager(SandboxConfig(config=config),
                                      policy=SandboxPolicy(config=config),
                                      max_transfer_mb=self.max_transfer_mb)

    @observe("max_transfer_mb")
    def _max_transfer_changed(self, change: dict[str, Any]) -> None:
        self.manager.max_transfer_mb = change["new"]

    @line_cell_magic
    def sandbox(self, line: str, cell: str | None = None) -> SandboxResult | None:
        """``%sandbox SUBCOMMAND``: manage the sandbox; ``%%sandbox [--sh]``: run the cell in it."""
        if cell is None:
            return self._run(lambda: commands.parse_line_magic("sandbox", line))
        return self._run(lambda: commands.parse_cell_magic("sandbox", line, cell))

    @line_magic
    def sandbox_exec(self, line: str) -> None:
        """``%sandbox_exec CMD...`` runs a shell command line in the sandbox."""
        self._run(lambda: commands.parse_line_magic("sandbox_exec", line))

    @cell_magic
    def sandbox_file(self, line: str, cell: str) -> None:
        """``%%sandbox_file PATH [--append] [--mode MODE]`` writes the cell to a sandbox file."""
        self._run(lambda: commands.parse_cell_magic("sandbox_file", line, cell))

    def _run(self, parse: Callable[[], commands.Command]) -> SandboxResult | None:
        """Parse and carry out one magic; our errors become a one-line SandboxFailure."""
        try:
            command = parse()
            if isinstance(command, commands.CellCommand):
                return self._run_cell(command)
            command_handlers.handle(self.manager, command, write, namespace=self.shell.user_ns)
        except SandboxError as err:
            raise failure(ErrorReport.of_ours(err)) from None
        except SandboxFailure:  # the cell's own error, already in the user's terms
            raise
        except Exception as err:  # a bug of ours: one line for the user, details in the log
            log.exception("%%sandbox magic failed")
            raise failure(ErrorReport.of_internal(err)) from None
        return None

    def _run_cell(self, command: commands.CellCommand) -> SandboxResult | None:
        """Run a ``%%sandbox`` body in the sandbox's IPython; a failing cell raises with the
        user's lines. Its pager output (``obj?``) goes to this shell's pager."""
        code = f"%%sh\n{command.body}" if command.shell else command.body
        run = _CellRun(trusted=self.manager.policy.trust_output)
        done = self.manager.execute(code, on_event=run.on_event, on_input=ask, out=write)
        for payload in done.get("payload") or []:
            if payload.get("source") == "page" and isinstance(payload.get("data"), dict):
                page.page(outgoing_bundle(payload["data"], None, run.trusted)[0])
            elif payload.get("source") == "set_next_input":
                self.shell.set_next_input(str(payload.get("text", "")))
        if done.get("status") == "error":
            raise failure(ErrorReport.of_event(done if "ename" in done else run.error))
        return run.result

    def close(self) -> None:
        """Remove the sandbox (a persistent one is kept)."""
        self.manager.shutdown()


def load(shell: InteractiveShell) -> None:
    """Register the magics on ``shell``; the sandbox starts at first use."""
    try:
        sandbox_magics = SandboxMagics(shell)
    except SandboxError as err:
        raise failure(ErrorReport.of_ours(err)) from None
    shell.register_magics(sandbox_magics)
    atexit.register(sandbox_magics.close)


def unload(shell: InteractiveShell) -> None:
    """Unregister the magics of ``shell`` and remove their sandbox."""
    sandbox_magics = shell.magics_manager.registry.pop(SandboxMagics.__name__, None)
    if not isinstance(sandbox_magics, SandboxMagics):
        return
    for kind, names in sandbox_magics.magics.items():
        table = shell.magics_manager.magics[kind]
        for name in names:
            table.pop(name, None)
    if sandbox_magics in shell.configurables:
        shell.configurables.remove(sandbox_magics)
    atexit.unregister(sandbox_magics.close)
    sandbox_magics.close()
