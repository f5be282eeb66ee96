"""The ``%sandbox`` commands: their model and their parser, shared by the kernel and the extension.

Magic text becomes a frozen command dataclass; anything malformed raises :class:`CommandError`
with a one-line message naming what was wrong and the usage; ``--help`` gives a
:class:`HelpRequest` command instead of an error. The module is pure: no engine, no Jupyter, no
I/O, and argparse is never allowed to print or to exit.

- :func:`parse_line_magic` and :func:`parse_cell_magic` take what IPython hands a magic function.
- :func:`split_magic` finds our magics in a whole cell (the kernel's view) and
  :func:`parse_code` parses all of them, or none when one is malformed.

``%sandbox start`` takes the flags of :mod:`agentkernel.config.options`, checked by the same
parsers as the configuration and the command line; file modes and variable names are checked
here.
"""

from __future__ import annotations

import argparse
import ast
import functools
import keyword
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, NoReturn, TypeAlias

from .config import options, specs
from .errors import CommandError
from .magic_names import OUR_MAGICS

__all__ = [
    "OUR_MAGICS",
    "Command",
    "CellCommand",
    "ChangesCommand",
    "ConnectCommand",
    "DownloadCommand",
    "ExecCommand",
    "ExportCommand",
    "FileCommand",
    "HelpRequest",
    "ListCommand",
    "CommandError",
    "MagicCall",
    "PortsCommand",
    "PullCommand",
    "PushCommand",
    "ResizeCommand",
    "RestartCommand",
    "StartCommand",
    "StatusCommand",
    "StopCommand",
    "UploadCommand",
    "parse_cell_magic",
    "parse_code",
    "parse_line_magic",
    "split_magic",
    "usage_text",
]

DEFAULT_FILE_MODE = 0o644
"""Permission bits of a file written by ``%%sandbox_file`` without ``--mode``."""


# --------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class StartCommand:
    """``%sandbox start``: start a sandbox with these options (those left out come from the
    configuration and the profile)."""

    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StopCommand:
    """``%sandbox stop``: stop the sandbox."""


@dataclass(frozen=True)
class RestartCommand:
    """``%sandbox restart``: restart the sandbox with the same settings."""


@dataclass(frozen=True)
class StatusCommand:
    """``%sandbox status``: report the sandbox's state and settings."""


@dataclass(frozen=True)
class PortsCommand:
    """``%sandbox ports``: list the published ports."""


@dataclass(frozen=True)
class ListCommand:
    """``%sandbox list``: list the AgentKernel sandboxes on the engine."""


@dataclass(frozen=True)
class ResizeCommand:
    """``%sandbox resize CPUS MEMORY_MB``: change the limits of the running sandbox."""

    cpus: float
    memory_mb: int


@dataclass(frozen=True)
class ChangesCommand:
    """``%sandbox changes``: list what cells created, changed or deleted in the workspace."""


@dataclass(frozen=True)
class ExportCommand:
    """``%sandbox export PATH... | --all``: copy workspace files cells created or changed to
    the same place on the host."""

    paths: tuple[str, ...] = ()
    all: bool = False


@dataclass(frozen=True)
class ConnectCommand:
    """``%sandbox connect NAME``: attach to a persistent sandbox."""

    name: str


@dataclass(frozen=True)
class UploadCommand:
    """``%sandbox upload LOCAL REMOTE``: copy a host file into the sandbox."""

    local: str
    remote: str


@dataclass(frozen=True)
class DownloadCommand:
    """``%sandbox download REMOTE LOCAL``: copy a sandbox file to the host."""

    remote: str
    local: str


@dataclass(frozen=True)
class PushCommand:
    """``%sandbox push NAME...``: copy host variables into the sandbox."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class PullCommand:
    """``%sandbox pull NAME...``: copy sandbox variables to the host."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class FileCommand:
    """``%%sandbox_file PATH``: write (or append) the cell body to PATH in the sandbox."""

    path: str
    body: str
    append: bool = False
    mode: int | None = None  # None: DEFAULT_FILE_MODE, or the existing file's mode with append


@dataclass(frozen=True)
class ExecCommand:
    """``%sandbox_exec CMD...``: run a shell command line in the sandbox."""

    cmd: str


@dataclass(frozen=True)
class CellCommand:
    """``%%sandbox [--sh]``: run the cell body in the sandbox, as Python or as a shell script."""

    body: str
    shell: bool = False


@dataclass(frozen=True)
class HelpRequest:
    """Asked-for help (``--help``, or a bare ``%sandbox``): show ``text``; not an error."""

    text: str


Command: TypeAlias = (
    StartCommand
    | StopCommand
    | RestartCommand
    | StatusCommand
    | PortsCommand
    | ListCommand
    | ResizeCommand
    | ConnectCommand
    | UploadCommand
    | DownloadCommand
    | ChangesCommand
    | ExportCommand
    | PushCommand
    | PullCommand
    | FileCommand
    | ExecCommand
    | CellCommand
    | HelpRequest
)


# ---------------------------------------------------------------------------- value converters
# argparse reports an ArgumentTypeError's message after the argument's name; a ValueError (and
# so a ConfigError) would lose its message, hence the adapter around the shared specs parsers.

_cpus = options.argument_type(specs.parse_cpus)
_memory_mb = options.argument_type(specs.parse_memory_mb)


def _octal_mode(text: str) -> int:
    """Parse file permission bits written in octal: ``644``, ``0755``, ``0o600``."""
    digits = text.lower().removeprefix("0o")
    if not digits or any(char not in "01234567" for char in digits) or int(digits, 8) > 0o7777:
        raise argparse.ArgumentTypeError(f"must be an octal mode like 0644, got {text!r}")
    return int(digits, 8)


def _identifier(text: str) -> str:
    """Accept a Python variable name (for push and pull)."""
    if not text.isidentifier() or keyword.iskeyword(text):
        raise argparse.ArgumentTypeError(f"must be a Python variable name, got {text!r}")
    return text


# ---------------------------------------------------------------------------------- argparse


class _HelpRequested(Exception):
    """Raised by ``--help`` inside argparse, carrying the parser's help text out."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _HelpAction(argparse.Action):
    """``-h/--help`` that hands the help text back instead of printing it and exiting."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, help="show this help")

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        raise _HelpRequested(parser.format_help())


_Formatter = functools.partial(
    argparse.RawDescriptionHelpFormatter, width=100, max_help_position=28
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`CommandError` instead of printing and exiting."""

    def __init__(self, prog: str, usage: str, description: str, epilog: str = "") -> None:
        super().__init__(
            prog=prog,
            usage=usage,
            description=description,
            epilog=epilog,
            formatter_class=_Formatter,
            add_help=False,
            allow_abbrev=False,
        )
        self.add_argument("-h", "--help", action=_HelpAction)

    def error(self, message: str) -> NoReturn:
        """Raise every argparse complaint as one line: ``PROG: problem (usage: ...)``."""
        raise CommandError(f"{self.prog}: {_reword(message)} (usage: {self.usage_line()})")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """Guard: argparse must never end the kernel process, whatever action asks it to."""
        raise CommandError(f"{self.prog}: {(message or 'parser exited').strip()}")

    def usage_line(self) -> str:
        """The usage without its ``usage:`` label, on one line."""
        return " ".join(self.format_usage().split()[1:])

    def parse(self, args: list[str]) -> argparse.Namespace | HelpRequest:
        """Parse ``args``; ``--help`` anywhere gives a :class:`HelpRequest` instead."""
        try:
            return self.parse_args(args)
        except _HelpRequested as request:
            return HelpRequest(request.text)


def _reword(message: str) -> str:
    """Shorten argparse's ``argument --cpus: ...`` to ``--cpus: ...``, "required" to "missing"."""
    message = re.sub(r"^argument (\S+): ", r"\1: ", message)
    return message.replace("the following arguments are required:", "missing")


@dataclass(frozen=True)
class _Subcommand:
    """A parser and the function that turns its namespace into a command."""

    parser: _Parser
    build: Callable[[argparse.Namespace], Command]


def _start_parser() -> _Parser:
    """The parser of ``%sandbox start``: the flags of every sandbox option."""
    parser = _Parser(
        "%sandbox start",
        "%(prog)s [OPTION]...",
        "Start the sandbox. Options left out come from the configuration and the profile.",
        "examples:\n"
        "  %sandbox start\n"
        "  %sandbox start --image python:3.12-slim --cpus 2 --memory 2g -p 8888:8888\n"
        "  %sandbox start --profile restrictive -e MODE=test --name lab --persistent",
    )
    options.add_arguments(parser)
    return parser


def _bare(sub: str, description: str, command: Command) -> _Subcommand:
    """A subcommand that takes no arguments and always gives ``command``."""
    parser = _Parser(f"%sandbox {sub}", "%(prog)s", description)
    return _Subcommand(parser, lambda _ns: command)


def _resize_parser() -> _Parser:
    """The parser of ``%sandbox resize``."""
    parser = _Parser(
        "%sandbox resize",
        "%(prog)s CPUS MEMORY_MB",
        "Change the CPU and memory limits of the running sandbox.",
        "examples:\n  %sandbox resize 2 2048\n  %sandbox resize 0.5 512m",
    )
    parser.add_argument("cpus", metavar="CPUS", type=_cpus, help="CPU limit, e.g. 1.5")
    parser.add_argument(
        "memory_mb", metavar="MEMORY_MB", type=_memory_mb, help="memory: 1024, 512m, 2g"
    )
    return parser


def _pair_parser(sub: str, first: str, second: str, description: str, example: str) -> _Parser:
    """A parser taking two paths, for ``upload`` and ``download``."""
    parser = _Parser(
        f"%sandbox {sub}", f"%(prog)s {first} {second}", description, f"example:\n  {example}"
    )
    parser.add_argument(first.lower(), metavar=first, help=f"{first.lower()} path")
    parser.add_argument(second.lower(), metavar=second, help=f"{second.lower()} path")
    return parser


def _names_parser(sub: str, description: str) -> _Parser:
    """A parser taking one or more variable names, for ``push`` and ``pull``."""
    parser = _Parser(
        f"%sandbox {sub}",
        "%(prog)s NAME [NAME...]",
        description,
        f"example:\n  %sandbox {sub} df model",
    )
    parser.add_argument("names", metavar="NAME", nargs="+", type=_identifier, help="variable name")
    return parser


def _connect_parser() -> _Parser:
    """The parser of ``%sandbox connect``."""
    parser = _Parser(
        "%sandbox connect",
        "%(prog)s NAME",
        "Attach to a persistent sandbox started with --name NAME --persistent.",
        "example:\n  %sandbox connect lab",
    )
    parser.add_argument("name", metavar="NAME", help="sandbox name")
    return parser


def _export_parser() -> _Parser:
    """The parser of ``%sandbox export``."""
    parser = _Parser(
        "%sandbox export",
        "%(prog)s PATH [PATH...] | --all",
        "Copy files or folders cells created or changed in the workspace to the same place "
        "on the host (within the policy's writable folders). PATH is relative to the "
        "notebook's folder, or absolute inside the workspace.",
        "examples:\n  %sandbox export results/ fig.png\n  %sandbox export --all",
    )
    parser.add_argument("paths", metavar="PATH", nargs="*", help="workspace path")
    parser.add_argument("--all", action="store_true", help="every change %%sandbox changes lists")
    return parser


def _export(ns: argparse.Namespace) -> ExportCommand:
    if bool(ns.paths) == bool(ns.all):
        raise CommandError("%sandbox export: name PATH... or --all (one of them); "
                           "usage: %sandbox export PATH [PATH...] | --all")
    return ExportCommand(tuple(ns.paths), ns.all)


@functools.cache
def _subcommands() -> dict[str, _Subcommand]:
    """The ``%sandbox`` subcommands, in the order the overview lists them."""
    return {
        "start": _Subcommand(_start_parser(), lambda ns: StartCommand(options.given(ns))),
        "stop": _bare("stop", "Stop the sandbox.", StopCommand()),
        "restart": _bare("restart", "Restart it with the same settings.", RestartCommand()),
        "status": _bare("status", "Show the sandbox's state, limits and ports.", StatusCommand()),
        "resize": _Subcommand(_resize_parser(), lambda ns: ResizeCommand(ns.cpus, ns.memory_mb)),
        "ports": _bare("ports", "List the published ports.", PortsCommand()),
        "connect": _Subcommand(_connect_parser(), lambda ns: ConnectCommand(ns.name)),
        "list": _bare("list", "List the AgentKernel sandboxes on the engine.", ListCommand()),
        "upload": _Subcommand(
            _pair_parser(
                "upload",
                "LOCAL",
                "REMOTE",
                "Copy a host file into the sandbox.",
                "%sandbox upload data.csv /workspace/data.csv",
            ),
            lambda ns: UploadCommand(ns.local, ns.remote),
        ),
        "download": _Subcommand(
            _pair_parser(
                "download",
                "REMOTE",
                "LOCAL",
                "Copy a sandbox file to the host.",
                "%sandbox download /workspace/out.png out.png",
            ),
            lambda ns: DownloadCommand(ns.remote, ns.local),
        ),
        "changes": _bare("changes", "List what cells created, changed or deleted in the "
                         "workspace (the host's files are untouched).", ChangesCommand()),
        "export": _Subcommand(_export_parser(), _export),
        "push": _Subcommand(
            _names_parser("push", "Copy host variables into the sandbox."),
            lambda ns: PushCommand(tuple(ns.names)),
        ),
        "pull": _Subcommand(
            _names_parser("pull", "Copy sandbox variables to the host."),
            lambda ns: PullCommand(tuple(ns.names)),
        ),
    }


@functools.cache
def _file_parser() -> _Parser:
    """The parser of the ``%%sandbox_file`` line."""
    parser = _Parser(
        "%%sandbox_file",
        "%(prog)s PATH [--append] [--mode MODE]",
        "Write the cell body to PATH in the sandbox.",
        "example:\n  %%sandbox_file /workspace/run.sh --mode 0755\n  echo hello",
    )
    parser.add_argument("path", metavar="PATH", help="absolute path in the sandbox")
    parser.add_argument("--append", action="store_true", help="append instead of overwriting")
    parser.add_argument(
        "--mode",
        metavar="MODE",
        type=_octal_mode,
        default=None,
        help="octal permission bits (default 0644)",
    )
    return parser


@functools.cache
def _cell_parser() -> _Parser:
    """The parser of the ``%%sandbox`` line."""
    parser = _Parser(
        "%%sandbox",
        "%(prog)s [--sh]",
        "Run the cell in the sandbox: as Python, or with --sh as a shell script.",
        "example:\n  %%sandbox --sh\n  pip list | head",
    )
    parser.add_argument("--sh", action="store_true", help="run the body with /bin/sh")
    return parser


_EXEC_USAGE = "%sandbox_exec CMD..."
_EXEC_HELP = f"""usage: {_EXEC_USAGE}

Run the rest of the line as a shell command in the sandbox.

examples:
  %sandbox_exec ls -la /workspace
  %sandbox_exec pip install --quiet requests
"""

_OVERVIEW = """AgentKernel sandbox magics

  %sandbox start [OPTION]...                   start the sandbox (see %sandbox start --help)
  %sandbox stop                                stop the sandbox
  %sandbox restart                             restart it with the same settings
  %sandbox status                              show its state, limits and ports
  %sandbox resize CPUS MEMORY_MB               change its CPU and memory limits
  %sandbox ports                               list its published ports
  %sandbox connect NAME                        attach to a persistent sandbox
  %sandbox list                                list AgentKernel sandboxes on the engine
  %sandbox upload LOCAL REMOTE                 copy a host file into the sandbox
  %sandbox download REMOTE LOCAL               copy a sandbox file to the host
  %sandbox changes                             list what cells changed in the workspace
  %sandbox export PATH [PATH...] | --all       copy those changes to the host
  %sandbox push NAME [NAME...]                 copy host variables into the sandbox
  %sandbox pull NAME [NAME...]                 copy sandbox variables to the host
  %sandbox_exec CMD...                         run a shell command in the sandbox
  %%sandbox_file PATH [--append] [--mode MODE] write the cell body to a sandbox file
  %%sandbox [--sh]                             run the cell in the sandbox (IPython extension)

examples:
  %sandbox start --cpus 2 --memory 2g -p 8888:8888
  %sandbox resize 1 512m
Add --help after any of them for details.
"""


def usage_text() -> str:
    """The overview of every magic, shown for ``%sandbox``, ``%sandbox --help``."""
    return _OVERVIEW


# ------------------------------------------------------------------------------------ parsing


def _tokens(prog: str, line: str) -> list[str]:
    """Split ``line`` like a POSIX shell; unbalanced quotes become a :class:`CommandError`."""
    try:
        return shlex.split(line)
    except ValueError as err:
        raise CommandError(f"{prog}: cannot split the line: {err} in {line.strip()!r}") from None


def _parse_sandbox(line: str) -> Command:
    """Parse the text after ``%sandbox``."""
    tokens = _tokens("%sandbox", line)
    if not tokens or tokens[0] in ("-h", "--help"):
        return HelpRequest(usage_text())
    name, *args = tokens
    subcommand = _subcommands().get(name)
    if subcommand is None:
        choices = ", ".join(_subcommands())
        raise CommandError(f"%sandbox: unknown subcommand {name!r} (choose from {choices})")
    parsed = subcommand.parser.parse(args)
    return parsed if isinstance(parsed, HelpRequest) else subcommand.build(parsed)


def _parse_exec(line: str) -> Command:
    """Parse the text after ``%sandbox_exec``: the rest of the line is the command, verbatim."""
    cmd = line.strip()
    if cmd in ("-h", "--help"):
        return HelpRequest(_EXEC_HELP)
    if not cmd:
        raise CommandError(f"%sandbox_exec: missing CMD (usage: {_EXEC_USAGE})")
    return ExecCommand(cmd)


def _parse_file(line: str, cell: str) -> Command:
    """Parse ``%%sandbox_file PATH [--append] [--mode MODE]`` with its body."""
    parsed = _file_parser().parse(_tokens("%%sandbox_file", line))
    if isinstance(parsed, HelpRequest):
        return parsed
    return FileCommand(parsed.path, cell, parsed.append, parsed.mode)


def _parse_cell(line: str, cell: str) -> Command:
    """Parse ``%%sandbox [--sh]`` with its body."""
    parsed = _cell_parser().parse(_tokens("%%sandbox", line))
    return parsed if isinstance(parsed, HelpRequest) else CellCommand(cell, parsed.sh)


_LINE_MAGICS: dict[str, Callable[[str], Command]] = {
    "sandbox": _parse_sandbox,
    "sandbox_exec": _parse_exec,
}
_CELL_MAGICS: dict[str, Callable[[str, str], Command]] = {
    "sandbox": _parse_cell,
    "sandbox_file": _parse_file,
}


def parse_line_magic(name: str, line: str) -> Command:
    """Parse line magic ``%name line`` (``name`` without the ``%``) into a command.

    Raises :class:`CommandError` for an unknown name or malformed arguments.
    """
    parser = _LINE_MAGICS.get(name)
    if parser is None:
        known = ", ".join(f"%{known}" for known in _LINE_MAGICS)
        raise CommandError(f"%{name}: not an AgentKernel line magic (line magics: {known})")
    return parser(line)


def parse_cell_magic(name: str, line: str, cell: str) -> Command:
    """Parse cell magic ``%%name line`` with body ``cell`` (``name`` without the ``%%``).

    Raises :class:`CommandError` for an unknown name or malformed arguments.
    """
    parser = _CELL_MAGICS.get(name)
    if parser is None:
        known = ", ".join(f"%%{known}" for known in _CELL_MAGICS)
        raise CommandError(f"%%{name}: not an AgentKernel cell magic (cell magics: {known})")
    return parser(line, cell)


# ------------------------------------------------------------------------------ cell splitting


class MagicCall(NamedTuple):
    """One magic found in a cell: ``kind`` "line" or "cell", its name, its line, its body."""

    kind: Literal["line", "cell"]
    name: str
    line: str
    body: str


_MAGIC = re.compile(r"(?P<percent>%%?)(?P<name>\w+)(?:\s+(?P<line>.*))?")


def _magic_of(text: str) -> re.Match[str] | None:
    """Match a stripped line that calls one of our magics, else ``None``."""
    match = _MAGIC.fullmatch(text)
    return match if match and match["name"] in OUR_MAGICS else None


def _is_python(code: str) -> bool:
    """True if ``code`` compiles as Python, e.g. a ``%sandbox`` line sits inside a string."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        compile(code, "<cell>", "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def split_magic(code: str) -> list[MagicCall] | None:
    """Find our magics in a cell; ``None`` when the cell is for the runner.

    - First non-blank line ``%%name ...``: a cell magic. Ours -> one ``MagicCall`` whose body is
      everything after that line, verbatim; not ours (``%%sh``, ``%%time``) -> ``None``.
    - Every other non-blank line, ignoring ``#`` comments, is ``%sandbox ...``, ``%sandbox_exec
      ...`` -> one line ``MagicCall`` per line, in order.
    - None of our magics in the cell -> ``None``; also when they only appear inside Python code
      that compiles (in a string, or as ``x % sandbox`` on a continuation line).
    - Ours mixed with other code, or ``%%sandbox...`` below the first line -> :class:`CommandError`.
    """
    lines = code.split("\n")
    first = next((i for i, text in enumerate(lines) if text.strip()), None)
    if first is None:
        return None
    head = _MAGIC.fullmatch(lines[first].strip())
    if head and head["percent"] == "%%":
        if head["name"] not in OUR_MAGICS:
            return None
        body = "\n".join(lines[first + 1 :])
        return [MagicCall("cell", head["name"], head["line"] or "", body)]
    return _line_magics(code, lines)


def _line_magics(code: str, lines: list[str]) -> list[MagicCall] | None:
    """The line-magic half of :func:`split_magic`."""
    ours: list[tuple[int, re.Match[str]]] = []
    others: list[tuple[int, str]] = []
    for number, text in enumerate(lines, 1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _magic_of(stripped)
        if match:
            ours.append((number, match))
        else:
            others.append((number, stripped))
    if not ours:
        return None
    misplaced = next((m for m in ours if m[1]["percent"] == "%%"), None)
    if not others and misplaced is None:
        return [MagicCall("line", match["name"], match["line"] or "", "") for _, match in ours]
    if _is_python(code):
        return None
    if misplaced is not None:
        number, match = misplaced
        raise CommandError(
            f"%%{match['name']}: a cell magic must be the first line of its cell (found on "
            f"line {number})"
        )
    number, text = others[0]
    name = ours[0][1]["name"]
    raise CommandError(
        f"%{name}: magic lines cannot share a cell with other code (line {number}: {text!r}); "
        "put them in a cell of their own"
    )


def parse_code(code: str) -> list[Command] | None:
    """Parse every magic of a cell; ``None`` when the cell is for the runner.

    All or nothing: the first malformed magic raises :class:`CommandError` before any command is
    returned, so a cell never half-runs.
    """
    calls = split_magic(code)
    if calls is None:
        return None
    return [
        parse_cell_magic(c.name, c.line, c.body)
        if c.kind == "cell"
        else parse_line_magic(c.name, c.line)
        for c in calls
    ]
