"""The Python version a fresh sandbox of an image reported, kept per image id.

A kernel answers ``kernel_info`` with its sandbox's Python version. Kept here, the answer need
not wait for the sandbox and its runner (0.3-0.5 s) once one fresh sandbox of the image has told
it: an image id names the image's content (its config, which lists its layers), so what one
sandbox made from it reported holds for every other, on any engine.

Written only from a runner's first frame in a container just created from the image, before
any cell ran there (nothing a cell does can change it); read back only when it looks like the
runner's ``major.minor.micro``. A missing or unwritable cache only means waiting, as before.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from ..cache import cache_dir, write_atomically
from ..errors import SandboxError

IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
VERSION = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}")  # what runner.py sends: "{}.{}.{}"
PREFIX = "python-of-image-"


def recall(image_id: str) -> str | None:
    """The version a fresh sandbox of ``image_id`` reported, or None if none is on record."""
    try:
        path = _path(image_id)
        text = path.read_text(encoding="ascii").strip() if path else ""
    except (OSError, UnicodeError, SandboxError):
        return None
    return text if VERSION.fullmatch(text) else None


def remember(image_id: str, version: object) -> None:
    """Record ``version``, reported by a fresh sandbox of ``image_id`` (anything that does not
    look like a version, or an id that is not an image id, is not recorded)."""
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        return
    with contextlib.suppress(OSError, SandboxError):
        path = _path(image_id)
        if path is None or recall(image_id) == version:
            return
        write_atomically(path, version)


def _path(image_id: str) -> Path | None:
    """The record's file for ``image_id``, or None if that is not an image id."""
    match = IMAGE_ID.fullmatch(image_id) if isinstance(image_id, str) else None
    return cache_dir() / f"{PREFIX}{match.group(1)}" if match else None
