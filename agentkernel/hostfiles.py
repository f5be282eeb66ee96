"""Reading and writing host files for a sandbox without ever following a link.

A folder a sandbox may write to can be changed under our feet: it may plant ``results ->
/elsewhere`` or swap a folder for a link between our check and our write. So every host file
operation here starts from a folder the policy allows, opened once, and walks down one name at
a time with ``O_NOFOLLOW``: a link anywhere on the way is an error, never a detour. Sizes are
counted against a limit: bytes read going in; coming out, what the host's disk gives each entry
(its blocks, at least one per file or folder) and never less than a file's size, whose holes
stay holes (a sparse file is written sparsely).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from .errors import SandboxError, SandboxNotFound, TooLarge
from .tarball import open_stream

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20
MB = 1 << 20
Owner = tuple[int, int]


def _parts(root: Path, path: Path) -> list[str]:
    """The names leading from ``root`` down to ``path`` (both resolved, path inside root)."""
    return list(path.relative_to(root).parts)


@contextlib.contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_folder(root: Path, names: list[str], create: bool = False) -> int:
    """An fd of the folder ``root/names...``, walked without following links (created when
    missing with ``create``). The caller closes it."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for name in names:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise SandboxNotFound(f"No such folder on the host: {root.joinpath(*names)}"
                                      ) from None
            except OSError as err:
                raise SandboxError(f"cannot open {root.joinpath(*names)}: {_why(err)}") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _why(err: OSError) -> str:
    if err.errno in (40, 20):  # ELOOP, ENOTDIR: a link (or a file) where a folder should be
        return "a link or a file stands where a folder should (links are never followed)"
    return err.strerror or type(err).__name__


# -- host -> sandbox --------------------------------------------------------------------------
def tree_tar(root: Path, path: Path, arcname: str, owner: Owner,
             max_bytes: int | None = None) -> bytes:
    """A tar of the host file or folder ``path`` (inside ``root``) stored as ``arcname``.

    Links inside a folder are stored as links (their text, never what they point to); fifos,
    sockets and devices are left out; at most ``max_bytes`` of file content (TooLarge).
    """
    names = _parts(root, path)
    buf = io.BytesIO()
    budget = [float("inf") if max_bytes is None else max_bytes]
    try:
        parent_fd = open_folder(root, names[:-1])
    except SandboxNotFound:
        raise SandboxNotFound(f"No such file on the host: {path}") from None
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar, \
            _fd(parent_fd) as parent:
        leaf = names[-1] if names else "."
        _add(tar, parent, leaf, arcname, owner, budget, path)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, dir_fd: int, name: str, arcname: str, owner: Owner,
         budget: list[float], shown: Path) -> None:
    """Add ``name`` (relative to ``dir_fd``) to ``tar`` as ``arcname``."""
    try:
        info_stat = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise SandboxNotFound(f"No such file on the host: {shown}") from None
    info = tarfile.TarInfo(arcname)
    info.uid, info.gid = owner
    info.mtime = int(info_stat.st_mtime)
    info.mode = stat.S_IMODE(info_stat.st_mode)
    if stat.S_ISLNK(info_stat.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
        tar.addfile(info)
    elif stat.S_ISDIR(info_stat.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        with _fd(os.open(name, DIR_FLAGS, dir_fd=dir_fd)) as folder:
            for child in sorted(os.listdir(folder)):
                _add(tar, folder, child, f"{arcname}/{child}", owner, budget, shown / child)
    elif stat.S_ISREG(info_stat.st_mode):
        with _fd(os.open(name, READ_FLAGS, dir_fd=dir_fd)) as handle:
            data = _read_bounded(handle, budget, shown)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _read_bounded(fd: int, budget: list[float], shown: Path) -> bytes:
    chunks = []
    while chunk := os.read(fd, CHUNK):
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise TooLarge(f"{shown} is larger than the upload limit")
        chunks.append(chunk)
    return b"".join(chunks)


# -- sandbox -> host --------------------------------------------------------------------------
def extract_into(root: Path, dest: Path, chunks: Iterable[bytes], leaf: str,
                 max_bytes: int | None = None) -> list[str]:
    """Extract a sandbox's archive stream and put its member ``leaf`` at host path ``dest``
    (inside ``root``; missing folders on the way are created). Returns the names extracted.

    The archive is unpacked into a fresh staging folder beside ``dest``, without following
    any link; links, devices and fifos in it are dropped; members that would land outside
    are refused (ValueError); more than ``max_bytes`` written is refused (TooLarge). Then
    ``leaf`` replaces ``dest`` in one rename. Nothing is left behind on failure.
    """
    names = _parts(root, dest)
    if not names:
        raise SandboxError(f"cannot download onto {dest}: it is the shared folder itself")
    staging = f".agentkernel-{secrets.token_hex(4)}"
    with _fd(open_folder(root, names[:-1], create=True)) as parent:
        os.mkdir(staging, 0o700, dir_fd=parent)
        try:
            with _fd(os.open(staging, DIR_FLAGS, dir_fd=parent)) as box:
                extracted = _extract(chunks, box, max_bytes)
                try:
                    os.stat(leaf, dir_fd=box, follow_symlinks=False)
                except FileNotFoundError:
                    raise SandboxError(
                        f"cannot download {leaf}: it is a link or a special file (links and "
                        "devices are never copied out of a sandbox; name the file they point "
                        "to)") from None
                try:
                    os.replace(leaf, names[-1], src_dir_fd=box, dst_dir_fd=parent)
                except OSError as err:
                    raise SandboxError(f"cannot download onto {dest}: {err.strerror} (a "
                                       "folder cannot replace a file, nor a file a folder "
                                       "that is not empty)") from None
        finally:
            shutil.rmtree(staging, dir_fd=parent, ignore_errors=True)
    return extracted


def extract_safely(chunks: Iterable[bytes], dest: Path, max_bytes: int | None = None) -> list[str]:
    """Extract an archive stream into the existing folder ``dest`` without following links
    (see :func:`extract_into`); returns the names extracted."""
    with _fd(os.open(dest, DIR_FLAGS)) as box:
        return _extract(chunks, box, max_bytes)


def _extract(chunks: Iterable[bytes], box: int, max_bytes: int | None) -> list[str]:
    try:
        return _extract_within(chunks, box, float("inf") if max_bytes is None else max_bytes)
    except TooLarge as err:
        raise TooLarge(f"the download is larger than its limit of {max_bytes / MB:g} MB at "
                       f"{err} (each file counts its size or what it takes on the host's "
                       "disk, whichever is larger, and at least one disk block)") from None


def _extract_within(chunks: Iterable[bytes], box: int, room: float) -> list[str]:
    """:func:`_extract` charging at most ``room`` bytes (TooLarge naming the member)."""
    charged, extracted = 0, []
    with open_stream(chunks) as tar:
        for member in tar:
            parts = _member_parts(member.name)
            if member.issym() or member.islnk() or not (member.isdir() or member.isfile()):
                continue
            with _fd(open_folder_at(box, parts[:-1])) as folder:
                if member.isdir():
                    charged += _make_folder(folder, parts[-1])
                else:
                    charged += _write_member(tar, member, folder, parts[-1], room - charged)
            if charged > room:
                raise TooLarge(member.name)
            extracted.append("/".join(parts))
    return extracted


def _allocated(fd: int) -> int:
    """What the open file or folder ``fd`` takes on the host's disk: its blocks, and at least
    one block (an inode and a folder entry are not free even for an empty file)."""
    info = os.fstat(fd)
    return max(info.st_blocks * 512, info.st_blksize)


def _make_folder(parent: int, name: str) -> int:
    """Create folder ``name`` (an archive may name one twice); what it took on the disk."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
    except FileExistsError:
        return 0
    with _fd(os.open(name, DIR_FLAGS, dir_fd=parent)) as made:
        return _allocated(made)


def _member_parts(name: str) -> list[str]:
    """The names of an archive member's path, refusing any that would climb out."""
    path = PurePosixPath(posixpath.normpath("/" + name))
    if ".." in PurePosixPath(name).parts or path == PurePosixPath("/"):
        raise ValueError(f"archive member {name!r} would land outside the download folder")
    return list(path.parts[1:])


def open_folder_at(base: int, names: list[str]) -> int:
    """An fd of folder ``names`` below the open folder ``base`` (created as needed; no link
    followed). The caller closes it."""
    fd = os.dup(base)
    try:
        for name in names:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                raise ValueError(f"archive member folder {name!r} cannot be extracted: "
                                 f"{err.strerror}") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, folder: int, name: str,
                  room: float) -> int:
    """Write one regular file member, its runs of zero blocks left as holes; return what it
    is charged: its size or what it took on the disk, whichever is larger (TooLarge when its
    size alone exceeds ``room``, before a byte is written)."""
    if member.size > room:
        raise TooLarge(member.name)
    handle = tar.extractfile(member)
    try:
        fd = os.open(name, WRITE_FLAGS, member.mode & 0o777, dir_fd=folder)
    except OSError as err:
        raise ValueError(f"archive member {member.name!r} cannot be extracted: "
                         f"{err.strerror}") from None
    size = 0
    with _fd(fd):
        block = os.fstat(fd).st_blksize or 4096
        while handle and (chunk := handle.read(CHUNK)):
            size += len(chunk)
            if size > room:
                raise TooLarge(member.name)
            _write_sparsely(fd, chunk, block)
        os.ftruncate(fd, size)  # a hole at the end gives the file its length
        os.utime(fd, (time.time(), member.mtime))
        return max(size, _allocated(fd))


def _write_sparsely(fd: int, data: bytes, block: int) -> None:
    """Write ``data`` at ``fd``'s offset, seeking over each whole block of zeros instead (the
    engine's archive carries a sparse file's holes as zeros; written, they would take disk)."""
    zero = bytes(block)
    if zero not in data:  # no block of zeros anywhere (the usual case): one write
        _write_all(fd, memoryview(data))
        return
    start = 0
    while start < len(data):
        hole = data[start:start + block] == zero[:len(data) - start]
        end = start + block
        while end < len(data) and (data[end:end + block] == zero[:len(data) - end]) == hole:
            end += block
        end = min(end, len(data))
        if hole:
            os.lseek(fd, end - start, os.SEEK_CUR)
        else:
            _write_all(fd, memoryview(data)[start:end])
        start = end


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]
