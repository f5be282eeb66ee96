"""Why a cell differs between the reference kernel and the compared one: one cause per cell.

The cause comes from the cell's source (the IPython feature it uses) and its outputs (what the
compared kernel said instead). Rules are tried in order; the first that matches names the cause:
first a note of agentkernel's own on the cell's stderr (``[agentkernel] ...``), then the IPython
syntax a cell uses (magics, ``!``, ``?``, pasted prompts), then what failed
(IPython or another module missing, an IPython name undefined), then, for a cell using no IPython
feature, an error the reference did not raise after an earlier cell of the notebook failed only
on the compared kernel (a NameError: a name that cell should have defined; any other: state it
should have set), then the feature the cell exercises (the kernel object, get_ipython(), stdin,
comms, await, files, display, matplotlib), then what differs in its outputs.
"""

from __future__ import annotations

import io
import re
import tokenize

from helpers.differential import CellRun, CellView

MAGIC_LINE = re.compile(r"^\s*(?:[\w.,\s\[\]]+=\s*)?%(?!%)\w", re.M)
SHELL_LINE = re.compile(r"^\s*(?:[\w.,\s\[\]]+=\s*)?!", re.M)
HELP_LINE = re.compile(r"^\s*(?:\?{1,2}[\w.]+|[\w.\[\]()'\"]+\?{1,2})\s*$|^\s*%(?:pinfo2?|pdoc)\b",
                       re.M)
PASTED = re.compile(r"^\s*(?:>>> |In \[\d*\]: )")
HISTORY_NAMES = re.compile(r"^(?:_{1,3}|_\d+|_i{1,3}|_i\d+|_ih|_oh|_dh|In|Out)$")
DISPLAY_CALLS = re.compile(r"\b(?:display|update_display|clear_output|display_\w+)\s*\(|"
                           r"\bdisplay_formatter\b")
REPR_METHODS = re.compile(r"\bdef _repr_\w+_\b")
DISPLAY_CLASSES = re.compile(r"\b(?:DisplayHandle|HTML|Markdown|Latex|Math|JSON|Image|SVG|Pretty|"
                             r"Code|Javascript|FileLinks?)\b")
MISSING_MODULE = re.compile(r"No module named '([\w.]+)'|Missing optional dependency '([\w.]+)'")
FILE_WORDS = re.compile(r"\b(?:open|read_csv|to_csv|read_text|write_text|pathlib|listdir|"
                        r"os\.path|os\.remove|savefig|iterdir|mkdir)\b")
PLOT_WORDS = re.compile(r"\bmatplotlib\b|\bplt\.|\.plot\b|\.hist\(")
KERNEL_OBJECT = re.compile(r"get_ipython\(\)\.kernel\b|"
                           r"\bkernel\.(?:session|get_parent|iopub_socket|comm_manager|shell)\b")
NOTICE = "[agentkernel]"  # how the kernel's own notes to the user start (stderr, first cell)
IPYTHON_NAMES = {"get_ipython": "get_ipython()", "display": "display()", "In": "output history",
                 "Out": "output history", "_ih": "output history", "_oh": "output history",
                 "_i": "output history", "_": "output history"}


def _names(source: str) -> set[str]:
    """Python names in ``source`` (best effort: cells may not be Python)."""
    found = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NAME:
                found.add(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        found.update(re.findall(r"\b[A-Za-z_]\w*\b", source))
    return found


def _error_value(view: CellView) -> str:
    return next((o[2] for o in view.outputs if o[0] == "error"), "")


def _missing_name(view: CellView) -> str | None:
    match = re.search(r"name '(\w+)' is not defined", _error_value(view))
    return match[1] if view.error == "NameError" and match else None


def _mimes(view: CellView) -> set[str]:
    return {m for o in view.outputs if o[0] in ("display_data", "execute_result") for m in o[1]}


def _result_text(view: CellView) -> list[str]:
    return [dict(o[2]).get("text/plain", "") for o in view.outputs if o[0] == "execute_result"]


def _stderr(view: CellView) -> str:
    return "".join(dict(o[1]).get("stderr", "") for o in view.outputs if o[0] == "stream")


def _same_value_printed_differently(ref: list[str], other: list[str]) -> bool:
    """Results that differ only in line breaks, or in the plain ``repr`` of classes and
    functions where IPython's pretty printer names them."""
    if not ref or not other or ref == other:
        return False
    squeeze = [re.sub(r"\s+", "", t) for t in ref], [re.sub(r"\s+", "", t) for t in other]
    plain_repr = re.compile(r"<class '|<built-in (?:function|method)|<function \w+ at ")
    return squeeze[0] == squeeze[1] or any(plain_repr.search(t) for t in other)


def cause_of(cell: CellRun, ref: CellView, other: CellView,
             earlier: list[tuple[str, CellView, CellView]]) -> str:
    """The one cause a differing cell is filed under (see the module docstring)."""
    source = cell.source
    first_line = source.lstrip().splitlines()[0] if source.strip() else ""
    if not other.ran:
        return "kernel died or did not start"
    if NOTICE in _stderr(other) and NOTICE not in _stderr(ref):
        return "agentkernel's notice on stderr"
    new_error = other.error if not ref.error else None
    missing = _missing_name(other) if new_error == "NameError" else None
    earlier_failed = any(b.error and not a.error for _, a, b in earlier)
    module = MISSING_MODULE.search(_error_value(other)) if new_error else None
    module_name = module and (module[1] or module[2]).split(".")[0]
    written_earlier = bool(module_name) and any(module_name in s for s, _, _ in earlier)
    if PASTED.match(source):
        return "pasted prompt"
    if first_line.startswith("%%"):
        return "cell magic"
    if HELP_LINE.search(source):
        return "help"
    if "%matplotlib" in source:
        return "%matplotlib"
    if MAGIC_LINE.search(source):
        return "IPython line magic"
    if SHELL_LINE.search(source):
        return "shell escape"
    if "IPython" in _error_value(other) and other.error in ("ModuleNotFoundError", "ImportError"):
        return "IPython not importable"
    if missing in IPYTHON_NAMES:
        return IPYTHON_NAMES[missing]
    if any(HISTORY_NAMES.match(n) for n in _names(source)):
        return "output history"
    if KERNEL_OBJECT.search(source):
        return "the kernel object (get_ipython().kernel)"
    if "get_ipython" in source:
        return "get_ipython()"
    if re.search(r"\b(?:input|getpass)\s*\(", source):
        return "stdin"
    if re.search(r"\bcomm\b", source):
        return "comms"
    if re.search(r"\bawait\b|\basync\b", source):
        return "top-level await"
    if missing is not None and earlier_failed:
        return "a name an earlier failing cell should have defined"
    if FILE_WORDS.search(source):
        return "files beside the notebook"
    if module_name and not written_earlier:
        return "a module the sandbox lacks"
    if new_error and earlier_failed:
        return "state an earlier failing cell should have set"
    if DISPLAY_CALLS.search(source):
        return "display()"
    if REPR_METHODS.search(source):
        return "_repr_*_ methods"
    if DISPLAY_CLASSES.search(source):
        return "display()"
    if "image/png" in _mimes(ref) | _mimes(other) or PLOT_WORDS.search(source):
        return "matplotlib"
    results = _result_text(ref), _result_text(other)
    if all(results) and _mimes(ref) != _mimes(other):
        return "rich repr (mime types)"
    if _same_value_printed_differently(*results):
        return "result repr (IPython pretty printer)"
    if earlier_failed and not ref.error and not other.error:
        return "state an earlier failing cell should have set"
    if ref.error != other.error:
        return "error message" if ref.error and other.error else "error or not"
    if _stderr(ref) != _stderr(other):
        return "warnings and stderr"
    if ref.error and other.error:
        return "error message"
    if any(ord(ch) > 127 for ch in source):
        return "unicode"
    return "other"
