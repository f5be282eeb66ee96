"""LaTeX links made harmless: ``\\href`` and ``\\url`` keep their link only to the web or mail.

The page typesets TeX in ``text/latex``, Markdown's math and HTML text with MathJax, whose
``\\href{URL}{math}`` makes the math a link (``\\url`` too in KaTeX). The source is read as
TeX reads it: control words are a backslash and letters (``\\\\href`` is a line break, then
text), an argument is a braced group (escaped braces do not count) or one token. A URL's scheme
is read as a browser reads it, more strictly: a browser drops tabs and newlines anywhere and
spaces and controls around the URL; here every space and control character is dropped.

A link stays only when its command is followed by spaces and a braced URL whose scheme is
``http``, ``https`` or ``mailto``, or that has none (relative to the page). Every other
``\\href`` loses its command and URL (its math stays), every other ``\\url`` its command (the
URL stays, as text). Where the source defines macros (``\\def``, ``\\let``,
``\\newcommand``...), which could give ``\\href`` another name for later math in the page, no
link stays at all.

``markup`` reads the TeX in HTML text: tags are skipped and character references decoded when
a URL is judged (MathJax reads math across no tag but ``<br>``, ``<wbr>`` and comments, which
the HTML sanitiser turns into a newline or removes).
"""

from __future__ import annotations

import html
import re

LINK_COMMANDS = {"href", "url"}
# Commands that define or alias macros (MathJax's newcommand extension, KaTeX, TeX itself).
DEFINITIONS = {"def", "gdef", "edef", "xdef", "let", "futurelet", "global", "newcommand",
               "renewcommand", "providecommand", "newenvironment", "renewenvironment",
               "declaremathoperator", "csname", "expandafter"}
SAFE_SCHEMES = {"http", "https", "mailto"}
# A URL's scheme as a browser's URL parser reads it; a URL without one is relative to the page.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_CONTROL = re.compile(r"\\(?:([A-Za-z]+)|.)", re.DOTALL)
_TAG = re.compile(r"<[^>]*>?")
_URL_DROPPED = re.compile(r"[\x00-\x20\x7f]")


def _end_of_group(text: str, start: int, markup: bool) -> int | None:
    """Index just past the ``}`` closing the group that opens at ``text[start]``, or None."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if markup and char == "<":
            tag = _TAG.match(text, i)
            i = tag.end() if tag else i + 1
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def url_is_safe(url: str, markup: bool = False) -> bool:
    """True when ``url`` (an argument's raw text) is, for a browser, a web or mail link or a
    link relative to the page."""
    if markup:
        url = html.unescape(_TAG.sub("", url))
    scheme = _SCHEME.match(_URL_DROPPED.sub("", url))
    return scheme is None or scheme.group(1).lower() in SAFE_SCHEMES


def _defines_macros(text: str) -> bool:
    return any(m.group(1) and m.group(1).lower() in DEFINITIONS for m in _CONTROL.finditer(text))


def without_unsafe_links(text: str, markup: bool = False) -> str:
    """``text`` with every TeX link that is not to the web or mail made plain (see above)."""
    if "\\" not in text:
        return text
    no_links = _defines_macros(text)
    parts: list[str] = []
    done = 0
    for match in _CONTROL.finditer(text):
        name = match.group(1)
        if match.start() < done or not name or name.lower() not in LINK_COMMANDS:
            continue
        after = match.end()
        while after < len(text) and text[after] in " \t\r\n":
            after += 1
        close = _end_of_group(text, after, markup) if text[after:after + 1] == "{" else None
        if close is not None and not no_links and url_is_safe(text[after + 1:close - 1], markup):
            continue
        parts.append(text[done:match.start()])
        done = close if close is not None and name.lower() == "href" else match.end()
    if not parts:
        return text
    return "".join(parts) + text[done:]
