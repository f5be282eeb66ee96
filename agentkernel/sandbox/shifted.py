"""A host folder with its ids shifted into the sandboxes' user namespace: an idmapped mount.

A user namespace's root is "others" to the host's files, so through a copy-on-write workspace
whose lower layer is the plain project folder it could not write (nor copy up) the project's
files. The lower layer is instead an idmapped bind mount of the folder (Linux 5.12+
``mount_setattr(MOUNT_ATTR_IDMAP)``, overlay over idmapped layers since 5.19): host id ``n``
shows as ``start + n``, so inside the sandbox every file keeps its own owner (root's are
root's), and what the sandbox writes lands in the upper layer owned by its own range.

This process (root on the engine's host, in the same mount namespace as a rootful Podman)
makes the whole workspace just before the sandbox's create: the idmapped mount (read-only, at
``mount_path``), then the overlay over it (``overlay_path``, in a folder only the sandbox's
root and the host's may enter), which the sandbox gets as a bind mount. Overlayfs holds its
own private copy of each layer, and the container its own copy of the overlay, so both are
detached from the host once the sandbox started (``release``): nothing of the workspace stays
mounted on the host for the engine to lose (Podman 4.3 left most overlays it mounted over a
shifted folder mounted after their volumes were gone, and its volume requests then hung). A
later start makes them again. (An idmapped overlay itself is refused by Linux: EINVAL, so
Podman's ``:idmap`` volume option cannot do this.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
from pathlib import Path

from ..engine import Engine
from ..engine.service import peer_credentials
from ..errors import SandboxError
from . import binds

log = logging.getLogger(__name__)

MOUNTS = Path("/run/agentkernel/workspaces")  # the shifted lower layers (root only)
OVERLAYS = Path("/run/agentkernel/shifted")  # the overlays handed to sandboxes
# x86-64 and arm64 share these numbers (the new mount API's are the same on every arch)
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, AT_EMPTY_PATH, AT_FDCWD = 1, 0x1000, -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_IDMAP = 0x1, 0x100000
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_path(workspace_id: str) -> Path:
    """Where workspace ``workspace_id``'s shifted lower layer is mounted while it starts."""
    return MOUNTS / workspace_id


def overlay_path(workspace_id: str) -> Path:
    """Where workspace ``workspace_id``'s overlay is mounted while it starts: in a folder of
    its own that only the sandbox's root (its owner) and the host's can enter."""
    return OVERLAYS / workspace_id / "root"


def possible(engine: Engine) -> bool:
    """Whether this process can give ``engine`` a shifted folder: it is root, and the local
    engine's service runs in this mount namespace (so it sees the mount)."""
    if os.geteuid() != 0 or engine.remote:
        return False
    peer = peer_credentials(engine.base_url)
    if peer is None or peer[0] <= 0:
        return False
    try:
        return os.readlink(f"/proc/{peer[0]}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False


def mount(source: str, workspace_id: str, shift: tuple[int, int, int]) -> Path:
    """Mount ``source`` read-only at ``mount_path(workspace_id)`` with host ids 0..count-1
    shown as ``shift``'s (uid, gid) onwards; OSError when Linux refuses, SandboxError when a
    part of ``source`` is a link now (it is reached without following one)."""
    target = mount_path(workspace_id)
    release(workspace_id)
    MOUNTS.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.mkdir(mode=0o700, exist_ok=True)
    try:  # the folder reached without following a link, as a bind's source (binds.py)
        folder = binds.open_path(source)
    except SandboxError:
        target.rmdir()
        raise
    try:
        tree = _syscall(SYS_OPEN_TREE, folder, b"", OPEN_TREE_CLONE | os.O_CLOEXEC
                        | AT_EMPTY_PATH)
    except OSError:
        target.rmdir()
        raise
    finally:
        os.close(folder)
    try:
        userns = _userns_fd(*shift)
        try:
            attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY, 0, 0, userns)
            _syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                     ctypes.sizeof(attr))
        finally:
            os.close(userns)
        _syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, str(target).encode(),
                 MOVE_MOUNT_F_EMPTY_PATH)
    except OSError:
        with contextlib.suppress(OSError):
            target.rmdir()
        raise
    finally:
        os.close(tree)
    return target


def detach(path: str) -> None:
    """Detach every mount at ``path`` (none: nothing)."""
    while _libc.umount2(path.encode(), MNT_DETACH) == 0:
        continue


def overlays(mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """The volumes whose overlay over a shifted folder is mounted here: name -> mount point.
    Podman 4.3 often leaves such an overlay mounted after the container and the volume are
    gone (seen after most kernels whose sandbox had a user namespace, never without one; its
    volume's mount count seems lost): those whose volume is gone are leftovers."""
    found = {}
    with open(mountinfo, encoding="utf-8") as lines:
        for line in lines:
            fields = line.split()
            if (len(fields) > 4 and " - overlay " in line and f"lowerdir={MOUNTS}/" in line
                    and fields[4].endswith("/_data")):
                found[Path(fields[4]).parent.name] = fields[4]
    return found


def mount_overlay(source: str, workspace_id: str, shift: tuple[int, int, int],
                  upper: str, work: str) -> Path:
    """The copy-on-write workspace over ``source`` with its ids shifted (``mount``), mounted
    at ``overlay_path(workspace_id)`` with layers ``upper`` and ``work`` (folders of the
    sandbox's root); the shifted lower layer is detached again once the overlay holds it.
    OSError when Linux refuses, SandboxError as ``mount``."""
    lower = mount(source, workspace_id, shift)
    try:
        target = overlay_path(workspace_id)  # mount() removed any before
        OVERLAYS.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(OVERLAYS, 0o711)  # others may pass through, not list
        target.parent.mkdir(mode=0o700)
        os.chown(target.parent, shift[0], shift[1])
        target.mkdir(mode=0o700)
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode()) != 0:
            code = ctypes.get_errno()
            _remove_overlay(workspace_id)
            raise OSError(code, f"mounting the overlay: {os.strerror(code)}")
        return target
    finally:
        _release_lower(workspace_id)


def release(workspace_id: str) -> None:
    """Detach workspace ``workspace_id``'s shifted folder and overlay and remove their mount
    points (a start that would mount the workspace without them then fails instead of
    showing an empty folder); nothing when there are none."""
    _release_lower(workspace_id)
    _remove_overlay(workspace_id)


def leftovers() -> list[str]:
    """The ids of workspaces whose shifted folder or overlay is still on this host (a start
    that never finished: its process died between the mount and the sandbox's start)."""
    found = set()
    for folder in (MOUNTS, OVERLAYS):
        with contextlib.suppress(OSError):
            found.update(entry.name for entry in folder.iterdir())
    return sorted(found)


def _release_lower(workspace_id: str) -> None:
    target = mount_path(workspace_id)
    if not target.is_dir():
        return
    detach(str(target))
    try:
        target.rmdir()
    except OSError as err:
        log.warning("workspace %s: %s left: %s", workspace_id, target, err)


def _remove_overlay(workspace_id: str) -> None:
    target = overlay_path(workspace_id)
    if not target.parent.is_dir():
        return
    detach(str(target))
    try:
        if target.is_dir():
            target.rmdir()
        target.parent.rmdir()
    except OSError as err:
        log.warning("workspace %s: %s left: %s", workspace_id, target, err)


def _userns_fd(uid: int, gid: int, count: int) -> int:
    """An fd of a new user namespace mapping ids 0..count-1 to ``uid``/``gid`` onwards (of a
    child made for it; the fd keeps the namespace after the child is gone). The child is
    forked, not a new interpreter (3 ms, not 15: it is on a start's path): it has one thread,
    as unshare(CLONE_NEWUSER) requires, and only calls unshare, writes, reads and exits."""
    told_read, told_write = os.pipe()
    hold_read, hold_write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        for fd in (told_read, told_write, hold_read, hold_write):
            os.close(fd)
        raise
    if pid == 0:  # the child: in its namespace until the parent closes ``hold``
        try:
            os.close(told_read)
            os.close(hold_write)  # else its read below would never see the end
            made = _libc.unshare(CLONE_NEWUSER) == 0
            os.write(told_write, b"1" if made else b"0")
            os.read(hold_read, 1)
        finally:
            os._exit(0)
    os.close(told_write)
    os.close(hold_read)
    try:
        if os.read(told_read, 1) != b"1":
            raise OSError(errno.EPERM, "a user namespace could not be made")
        Path(f"/proc/{pid}/uid_map").write_text(f"0 {uid} {count}\n")
        Path(f"/proc/{pid}/gid_map").write_text(f"0 {gid} {count}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(told_read)
        os.close(hold_write)
        os.waitpid(pid, 0)


def _syscall(number: int, *args: object) -> int:
    result = _libc.syscall(number, *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(result)
