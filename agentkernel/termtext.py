"""Terminal control sequences in sandbox text: colours kept, every other sequence removed.

Stream text, error tracebacks and ``text/plain`` from a sandbox may hold ANSI escape
sequences. Jupyter frontends render SGR colour codes (``ESC [ ... m``: IPython's tracebacks
use them, as the local kernel's output does), so those stay. Every other sequence (ECMA-48:
OSC such as 52 clipboard, 0/2 window title and 8 hyperlinks; DCS, SOS, PM, APC; CSI other than
SGR: cursor moves, screen clears, mode and key settings; two-character escapes such as
``ESC c``, the terminal reset) is removed, in its 7-bit and 8-bit (C1) forms, with its payload;
so is any other C1 control character. A sequence cut off at the end of a text is removed up to
that end, so text pieces shown one after the other never join into a sequence: every ESC that
remains starts a whole SGR sequence.
"""

from __future__ import annotations

import re

# A control string (OSC, DCS, SOS, PM, APC) runs to BEL or ST (ESC \ or its C1 form), to the
# ESC of another sequence, or to the end of the text.
_SEQUENCE = re.compile(
    r"(?P<csi>(?:\x1b\[|\x9b)(?P<params>[\x30-\x3f]*)[\x20-\x2f]*(?P<final>[\x40-\x7e]))"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]"
    r"|[\x1b\x80-\x9f]"
)
_SGR_PARAMS = re.compile(r"[0-9;:]*")


def _keep_sgr(match: re.Match[str]) -> str:
    """The sequence itself when it is an SGR (colours and text style) in its 7-bit form (the
    one frontends render), else nothing."""
    if match.group(0).startswith("\x1b[") and match.group("final") == "m" and \
            _SGR_PARAMS.fullmatch(match.group("params")):
        return match.group(0)
    return ""


def without_control_sequences(text: str) -> str:
    """``text`` with every terminal control sequence but SGR colour codes removed."""
    return _SEQUENCE.sub(_keep_sgr, text)
