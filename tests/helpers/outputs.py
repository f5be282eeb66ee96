"""Checks of what the page is shown: no markup from a sandbox that could run in the page."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

FRAME = re.compile(r'<iframe sandbox="allow-scripts" srcdoc="([^"]*)"')


class _Elements(HTMLParser):
    """Every element of some markup with its attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def inert(markup: str) -> bool:
    """No script, frame, object or form element, no event handler, and no URL but web, mail and
    image data in ``markup``'s elements (its text may say anything: it is text)."""
    parser = _Elements()
    parser.feed(markup)
    for tag, attrs in parser.found:
        if tag in ("script", "iframe", "frame", "object", "embed", "form", "base", "meta"):
            return False
        for name, value in attrs:
            url = re.sub(r"[\s\x00-\x1f]", "", value or "").lower()
            if name.startswith("on") or url.startswith(("javascript:", "vbscript:")):
                return False
            if url.startswith("data:") and not (tag == "img" and url.startswith("data:image/")):
                return False
    return True


def safe_to_show(markup: str) -> bool:
    """True when ``markup`` is inert, or is one frame whose scripts run in an opaque origin
    (sandboxed, without allow-same-origin) and nothing else."""
    frame = FRAME.match(markup)
    if frame is None:
        return inert(markup)
    return markup.count("<iframe") == 1 and "allow-same-origin" not in markup and inert(
        FRAME.sub("", markup).replace("</iframe>", ""))


def framed_source(markup: str) -> str | None:
    """The page an isolating frame shows, or None when ``markup`` is no such frame."""
    frame = FRAME.match(markup)
    return html.unescape(frame.group(1)) if frame else None
