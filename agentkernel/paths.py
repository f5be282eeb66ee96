"""The rules a path given to the sandbox file API must follow."""

from __future__ import annotations

import posixpath

from .errors import PathRefused

FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


def check_sandbox_path(path: str) -> str:
    """Return ``path`` normalised, or raise PathRefused naming the rule it breaks.

    Rules: a non-empty str, absolute, no ``..`` component, no NUL, not ``/`` itself, and not
    inside /proc, /sys or /dev.
    """
    if not isinstance(path, str) or not path:
        raise PathRefused(f"sandbox path {path!r} refused: must be a non-empty string")
    if "\x00" in path:
        raise PathRefused(f"sandbox path {path!r} refused: must not contain NUL bytes")
    if not path.startswith("/"):
        raise PathRefused(f"sandbox path {path!r} refused: must be absolute (start with '/')")
    if ".." in path.split("/"):
        raise PathRefused(f"sandbox path {path!r} refused: must not contain '..'")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal == "/":
        raise PathRefused(f"sandbox path {path!r} refused: must name something below '/'")
    for root in FORBIDDEN_ROOTS:
        if normal == root or normal.startswith(root + "/"):
            raise PathRefused(
                f"sandbox path {path!r} refused: {root} is off limits "
                f"(not inside {', '.join(FORBIDDEN_ROOTS)})"
            )
    return normal
