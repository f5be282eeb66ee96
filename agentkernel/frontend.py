"""How sandbox output and our errors look in a frontend: shared by the kernel and the extension.

A runner event (stream, display, result, error) and one of our own errors (a bad magic, a dead
sandbox) become the same thing in the Jupyter kernel and in the IPython extension; this module
is where that is decided, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import one_line
from .sanitize import safe_bundle, safe_comm_data
from .termtext import without_control_sequences

RED, RESET = "\x1b[0;31m", "\x1b[0m"
# Mime types shown as terminal text, whose ANSI sequences a frontend interprets.
TERMINAL_MIMES = ("text/plain", "application/vnd.jupyter.stdout",
                  "application/vnd.jupyter.stderr")


def outgoing_text(text: str) -> str:
    """Text from the sandbox (a stream's, an error's), made fit for a frontend: SGR colour codes
    are kept, every other terminal control sequence (OSC clipboard, title and hyperlinks, DCS,
    APC, PM, cursor and screen control) is removed (:mod:`agentkernel.termtext`). Whatever
    the output policy: a terminal acts on them, a page shows their payload as text."""
    return without_control_sequences(text)


# A sequence begun at the end of a piece of text, whose end may be in the next piece: an SGR
# code, or a control string (OSC, DCS, SOS, PM, APC) to be removed whole.
_BEGUN = re.compile(r"\x1b(?:\[[0-9;:]{0,32})?"
                    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x9c]{0,4096}")
_INTRODUCERS = "\x1b\x90\x98\x9b\x9d\x9e\x9f"


@dataclass
class StreamText:
    """A cell's stdout and stderr, made fit for a frontend piece by piece.

    The sandbox's pipes split a large write anywhere, so a colour code (or a control string)
    may arrive in two pieces; the start of one at the end of a piece is held back and put
    before the next piece of that stream. :meth:`end` drops what is still held when the cell
    is done (a sequence never finished)."""

    held: dict[str, str] = field(default_factory=dict)

    def feed(self, name: str, text: str) -> str:
        """The part of ``text`` (after what was held) that can be shown now."""
        text = self.held.pop(name, "") + text
        last = max(text.rfind(char, len(text) - 4100) for char in _INTRODUCERS)
        if last >= 0 and _BEGUN.fullmatch(text, last):
            self.held[name], text = text[last:], text[:last]
        return outgoing_text(text)

    def end(self) -> None:
        self.held.clear()


def outgoing_bundle(data: dict, metadata: dict | None = None,
                    trusted: bool = False) -> tuple[dict, dict]:
    """A mime bundle from the sandbox, made fit to show in the user's page.

    Every bundle a sandbox produces goes through here before a frontend sees it: display and
    update_display, execute_result, inspect replies, pager payloads, the extension's output.
    Unless the operator's policy trusts sandbox output (``trusted``), HTML, SVG, MathML and
    Markdown are sanitised, anything that needs scripts runs in an isolated frame
    (:mod:`agentkernel.sanitize`) and terminal text loses its control sequences but colours
    (:func:`outgoing_text`).
    """
    if trusted:
        return dict(data), dict(metadata or {})
    safe, meta = safe_bundle(data, dict(metadata or {}))
    for mime in TERMINAL_MIMES:
        if isinstance(safe.get(mime), str):
            safe[mime] = outgoing_text(safe[mime])
    return safe, meta


def outgoing_comm_data(target: str | None, model: str | None, data: dict,
                       trusted: bool = False) -> dict:
    """A comm message's data from the sandbox, made fit for the page: what a widget would
    render as HTML (an HTML widget's value, an Output widget's outputs, HTML descriptions) is
    sanitised like any output, unless the operator's policy trusts sandbox output."""
    return dict(data) if trusted else safe_comm_data(target, model, data)


@dataclass(frozen=True)
class ErrorReport:
    """An error as Jupyter shows it: its name, value and traceback lines, without terminal
    control sequences but colours (:func:`outgoing_text`), whoever made it."""

    ename: str
    evalue: str
    traceback: list[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ename", outgoing_text(self.ename))
        object.__setattr__(self, "evalue", outgoing_text(self.evalue))
        object.__setattr__(self, "traceback", [outgoing_text(line) for line in self.traceback])

    @classmethod
    def of_ours(cls, err: Exception) -> ErrorReport:
        """One of our own errors: one red line, no traceback from our code."""
        message = str(err)
        return cls(type(err).__name__, message, [f"{RED}{message}{RESET}"])

    @classmethod
    def of_internal(cls, err: BaseException) -> ErrorReport:
        """A failure of our own code that no rule foresaw: one line, never a traceback; the
        caller logs the details."""
        message = (f"agentkernel internal error ({type(err).__name__}: {one_line(err, 200)}); "
                   "the sandbox is kept, details are in the kernel's log")
        return cls("InternalError", message, [f"{RED}{message}{RESET}"])

    @classmethod
    def of_event(cls, event: dict | None) -> ErrorReport:
        """The runner's error event of a failed cell (a bare "Error" if it sent none)."""
        event = event or {}
        return cls(str(event.get("ename", "Error")), str(event.get("evalue", "")),
                   [str(line) for line in event.get("traceback", [])])

    def content(self) -> dict:
        """The fields of Jupyter's ``error`` message and of an error reply."""
        return {"ename": self.ename, "evalue": self.evalue, "traceback": list(self.traceback)}
