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
# Where a sequence may start: every alternative of _SEQUENCE begins with one of these. Found by
# a scan for one character class (fast), not by trying _SEQUENCE's alternatives at every
# character (re's own search does that: about 10 MB/s, the bound of a flood's throughput).
_INTRODUCER = re.compile(r"[\x1b\x80-\x9f]")


def _keep_sgr(match: re.Match[str]) -> str:
    """The sequence itself when it is an SGR (colours and text style) in its 7-bit form (the
    one frontends render), else nothing."""
    if match.group(0).startswith("\x1b[") and match.group("final") == "m" and \
            _SGR_PARAMS.fullmatch(match.group("params")):
        return match.group(0)
    return ""


def without_control_sequences(text: str) -> str:
    """``text`` with every terminal control sequence but SGR colour codes removed (what
    ``_SEQUENCE.sub(_keep_sgr, text)`` gives, matched only where a sequence can start)."""
    start = _introducer(text, 0)
    if start < 0:
        return text
    parts, done = [], 0
    while start >= 0:
        sequence = _SEQUENCE.match(text, start)  # every introducer starts one
        assert sequence is not None
        parts += [text[done:start], _keep_sgr(sequence)]
        done = sequence.end()
        start = _introducer(text, done)
    parts.append(text[done:])
    return "".join(parts)


def _introducer(text: str, start: int) -> int:
    """Where the first character that may start a sequence is, from ``start``; -1: none.
    ASCII text (most output) has only ESC, found by ``str.find`` (memchr)."""
    if text.isascii():
        return text.find("\x1b", start)
    found = _INTRODUCER.search(text, start)
    return found.start() if found is not None else -1
