"""Host folders mounted into a sandbox are exactly the ones the policy checked.

The policy checks a path once (resolved, inside an allowed folder); the engine resolves the
same text again when it mounts it. A cell that can write near that path (a writable project
folder) can swap a folder for a link in between and have the engine mount a host folder the
policy never allowed. So just before the create, each source is walked from ``/`` one name at
a time without following links (a link found then is refused) and its identity (device,
inode) kept; once the container runs, what it has at each target must be that same folder,
seen through ``/proc/<pid>/root`` (or, where this process may not look there, by ``stat``
run in the fresh container before any cell). A mismatch removes the sandbox.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import SandboxError

Identity = tuple[int, int]


def identity(path: str) -> Identity:
    """(device, inode) of host ``path``, reached from ``/`` without following any link;
    SandboxError when a part of it is a link or missing now."""
    fd = open_path(path)
    try:
        info = os.fstat(fd)
        return info.st_dev, info.st_ino
    finally:
        os.close(fd)


def open_path(path: str) -> int:
    """An ``O_PATH`` fd of host ``path``, reached from ``/`` without following any link (the
    caller closes it); SandboxError when a part of it is a link or missing now."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        for name in Path(path).parts[1:]:
            try:
                step = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as err:
                raise SandboxError(f"the host folder {path} changed since the policy checked "
                                   f"it ({name}: {err.strerror}); not mounted") from None
            os.close(fd)
            fd = step
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise SandboxError(f"the host folder {path} changed since the policy checked "
                                   f"it ({name} is a link now); not mounted")
    except BaseException:
        os.close(fd)
        raise
    return fd


def verify(pid: int | None, expected: dict[str, Identity],
           stat_inside: Callable[[str], Identity | None]) -> None:
    """SandboxError unless the container whose main process is ``pid`` has at each target of
    ``expected`` the host folder of that identity. ``stat_inside(target)`` asks the container
    itself, where ``/proc/<pid>/root`` cannot be read."""
    for target, wanted in expected.items():
        seen = None
        if pid:
            with contextlib.suppress(OSError):
                info = os.stat(f"/proc/{pid}/root{target}")
                seen = (info.st_dev, info.st_ino)
        if seen is None:
            seen = stat_inside(target)
        if seen != wanted:
            raise SandboxError(f"the folder mounted at {target} is not the host folder the "
                               "policy checked (it was swapped while the sandbox started); "
                               "the sandbox was removed")
