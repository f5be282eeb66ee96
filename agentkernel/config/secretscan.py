"""Where a host folder given to a sandbox holds credentials: the walk, and what it remembers.

Every start walks the workspace and each bound folder for entries a sandbox must not see
(``hostpaths.SECRET_NAMES``, ``SECRET_SUFFIXES``, Jupyter connection files) at any depth. A
project of 57,000 entries (a ``.venv``, a ``.git``) takes 0.1 s of CPU at each start, most of
it listing folders that did not change since the last one. So each folder's listing (what the
walk needs of it: how many entries, which names are watched, which are folders) is kept in
agentkernel's private cache (which no sandbox reaches), beside the folder's identity and change
time, and used again only while the folder still has them: a folder's change time moves on
whenever an entry is added, removed or renamed in it, and no program can set it back (unlike
its modification time). A folder changed less than ``SETTLED_NS`` before the walk began is not
kept: a change within the same tick of the file system's clock would leave the same time.
Checking a folder costs one ``lstat`` instead of a listing: 0.1 s becomes about 0.04 s. (On a
network file system the client may answer from its attribute cache for a few seconds, as it
may answer a listing from its cache.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from ..cache import cache_dir, write_atomically
from ..errors import SandboxError
from .hostpaths import CONNECTION_FILE_PREFIXES, SCAN_LIMIT, SECRET_NAMES, SECRET_SUFFIXES

SETTLED_NS = 2_000_000_000  # a folder changed this recently is listed again next time
FORMAT = 1  # of the remembered listings; another is ignored

_WATCHED = SECRET_NAMES | {suffix[-1] for suffix in SECRET_SUFFIXES}

Listing = tuple[int, list[str], list[str]]  # entries, watched names, sub-folders


def secret_entries(root: Path, limit: int = SCAN_LIMIT) -> list[Path]:
    """The entries below host folder ``root`` that hold credentials or are Jupyter connection
    files, at any depth, found without following links; ValueError when ``root`` holds more
    than ``limit`` entries (too many to check)."""
    began = time.time_ns()
    remembered = _load(root)
    kept: dict[str, list[Any]] = {}
    changed = False  # a listing is kept that was not remembered
    found: list[Path] = []
    seen = 0
    top = str(root)
    pending = [""]
    while pending:
        relative = pending.pop()
        folder = f"{top}/{relative}" if relative else top
        try:  # the root as given (resolved by the caller); below it, no link is followed
            info = os.lstat(folder) if relative else os.stat(folder)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            continue
        known = remembered.get(relative)
        fresh = not _still_valid(known, info)
        if fresh:
            listing = _list(folder)
            if listing is None:
                continue
            known = [info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, *listing]
        if began - info.st_ctime_ns > SETTLED_NS:
            kept[relative] = known
            changed = changed or fresh
        count, watched, folders = known[4:]
        seen += count
        if seen > limit:
            raise ValueError(f"{root} holds more than {limit} files and folders")
        if watched:
            parts = tuple(relative.split("/")) if relative else ()
            secret = {name for name in watched if _is_secret((*parts, name))}
            found += [Path(folder, name) for name in secret]
            folders = [name for name in folders if name not in secret]
        pending += [f"{relative}/{name}" for name in folders] if relative else folders
    if changed or len(kept) != len(remembered):  # else what is kept is what was
        _save(root, kept)
    return sorted(found)


def _is_secret(parts: tuple[str, ...]) -> bool:
    """True for an entry (its path's names) that holds credentials or is a connection file."""
    name = parts[-1]
    return name in SECRET_NAMES or _connection_file(name) or any(
        parts[-len(suffix):] == suffix for suffix in SECRET_SUFFIXES)


def _connection_file(name: str) -> bool:
    """True for the name of a Jupyter runtime file (a kernel's key, a server's token)."""
    return name.endswith(".json") and name.startswith(CONNECTION_FILE_PREFIXES)


def _list(folder: str) -> Listing | None:
    """The folder's listing as the walk needs it; None when it cannot be read."""
    count = 0
    watched: list[str] = []
    folders: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                count += 1
                name = entry.name
                if name in _WATCHED or _connection_file(name):
                    watched.append(name)
                if entry.is_dir(follow_symlinks=False):
                    folders.append(name)
    except OSError:
        return None
    return count, watched, folders


def _still_valid(known: Any, info: os.stat_result) -> bool:
    """Whether a remembered listing is of the right shape and was made of the folder as it
    is now (its device, inode, modification and change times; the file is agentkernel's
    own, in a folder no sandbox reaches)."""
    return (isinstance(known, list) and len(known) == 7 and known[3] == info.st_ctime_ns
            and known[1] == info.st_ino and known[0] == info.st_dev
            and known[2] == info.st_mtime_ns and isinstance(known[4], int)
            and isinstance(known[5], list) and isinstance(known[6], list))


def _path(root: Path) -> Path:
    """Where the listings of ``root`` are kept (SandboxError: no private cache)."""
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:24]
    return cache_dir() / f"secret-scan-{digest}.json"


def _load(root: Path) -> dict[str, Any]:
    """The listings remembered for ``root`` (empty when none can be read)."""
    try:
        kept = json.loads(_path(root).read_text(encoding="utf-8"))
    except (OSError, UnicodeError, SandboxError, ValueError):
        return {}
    if (not isinstance(kept, dict) or kept.get("format") != FORMAT
            or kept.get("root") != str(root) or not isinstance(kept.get("folders"), dict)):
        return {}
    return kept["folders"]


def _save(root: Path, folders: dict[str, list[Any]]) -> None:
    """Remember ``folders`` for ``root`` (best effort)."""
    with contextlib.suppress(OSError, SandboxError):
        write_atomically(_path(root), json.dumps(
            {"format": FORMAT, "root": str(root), "folders": folders}, separators=(",", ":")))
