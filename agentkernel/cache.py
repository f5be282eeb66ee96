"""agentkernel's private cache folder on this host, and how a file goes into it.

One folder for everything a process keeps for the next one (the IPython bundle's description
and fill locks, each image's Python version, Podman's confined seccomp profiles and the path
they are made from): ``$XDG_CACHE_HOME/agentkernel``, else a folder of this user's in the
temporary directory; created 0700 and used only when it is this user's and writable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

from .errors import SandboxError


def cache_folders() -> tuple[Path, Path]:
    """Where the cache folder may be, in the order tried: ``$XDG_CACHE_HOME/agentkernel``
    (else ``~/.cache/agentkernel``), then a folder of this user's in the temporary directory.
    No sandbox may reach either (``config.hostpaths``): what a start trusts is kept there."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "agentkernel", Path(tempfile.gettempdir()) / f"agentkernel-{os.getuid()}"


def cache_dir() -> Path:
    """The user-private cache folder (created 0700); SandboxError when there is none."""
    for folder in cache_folders():
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if folder.stat().st_uid == os.getuid() and os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    first, second = cache_folders()
    raise SandboxError(f"no private folder for agentkernel's cache: {first} and {second} "
                       "are not usable")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a file beside it, renamed over it: a reader (another
    process or thread) sees the old content or the new, never part of it. OSError on failure,
    leaving no partial file."""
    staging = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        staging.write_text(text, encoding="utf-8")
        staging.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            staging.unlink()
        raise
