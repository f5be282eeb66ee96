"""Files in and out of a sandbox: read, write, upload, download, folders.

The engine's archive API cannot see tmpfs mounts or write a read-only root, so paths on the
sandbox's tmpfs go through an exec stream instead.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from .. import hostfiles, paths, tarball
from ..errors import SandboxError, SandboxNotFound, TooLarge, one_line
from .execution import Execution

READ_LIMIT = 256 * 1024 * 1024
"""Largest file read_file() returns unless asked for more."""
READ_SCRIPT = ('if [ -L "$1" ] || { [ -e "$1" ] && [ ! -f "$1" ]; }; then '
               'echo "not a regular file" >&2; exit 3; fi; head -c "$2" -- "$1"')
# A refused path still drains stdin before exiting: Podman loses the exec's stderr (and reports
# "connection reset by peer") when the process exits while its stdin is being written.
APPEND_SCRIPT = ('if [ -L "$1" ] || { [ -e "$1" ] && [ ! -f "$1" ]; }; then cat > /dev/null; '
                 'echo "not a regular file (links and devices are refused)" >&2; exit 3; fi; '
                 'mkdir -p -- "$(dirname -- "$1")" && '
                 'if [ ! -e "$1" ]; then : > "$1" && chmod "$2" -- "$1"; fi && cat >> "$1"')


class Files(Execution):
    """read_file, write_file, upload, download, mkdir, exists, file_mode, remove_file."""

    def _owner(self) -> tuple[int, int]:
        """(uid, gid) that files written into the sandbox belong to."""
        uid, _, gid = (self.effective.user or "0").partition(":")
        if uid.isascii() and uid.isdigit():
            return int(uid), int(gid) if gid.isascii() and gid.isdigit() else int(uid)
        return 0, 0

    def _on_tmpfs(self, path: str) -> bool:
        """True for paths on the sandbox's tmpfs mounts, which the archive API cannot see."""
        return any(path == t or path.startswith(t.rstrip("/") + "/") for t in self.effective.tmpfs)

    def _put_archive(self, folder: str, archive: bytes) -> bool:
        """Put an archive into ``folder``; False if the folder does not exist."""
        with self._errors(f"writing into {folder}"):
            return self.engine.put_archive(self.container_id, folder, archive)

    def _get_archive(self, path: str):  # -> Iterator[bytes]
        with self._errors(f"reading {path}"):
            try:
                return self.engine.get_archive(self.container_id, path)
            except SandboxNotFound:
                raise SandboxNotFound(f"No such file in sandbox {self.name}: {path}") from None

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` in the sandbox, creating parent folders."""
        path = paths.check_sandbox_path(path)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        if self._on_tmpfs(path):
            return self._write_via_exec(path, payload, mode)
        parent, filename = posixpath.split(path)
        archive = tarball.single_file_tar(filename, payload, mode, owner=self._owner())
        if not self._put_archive(parent, archive):
            self.mkdir(parent)
            if not self._put_archive(parent, archive):
                raise SandboxError(f"writing {path} failed: cannot create folder {parent}")

    def _write_via_exec(self, path: str, payload: bytes, mode: int) -> None:
        script = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" -- "$1"'
        code, _, err = self._exec_bytes(["/bin/sh", "-c", script, "sh", path, f"{mode:o}"],
                                        stdin=payload)
        if code != 0:
            raise SandboxError(f"writing {path} failed: {one_line(err.decode(errors='replace'))}")

    def read_file(self, path: str, max_bytes: int = READ_LIMIT) -> bytes:
        """The bytes of the regular file at ``path`` (at most ``max_bytes``: TooLarge beyond);
        SandboxNotFound says "No such file". Links to devices and other special files are
        refused, so a read always ends."""
        path = paths.check_sandbox_path(path)
        if self._on_tmpfs(path):
            code, out, err = self._exec_bytes(
                ["/bin/sh", "-c", READ_SCRIPT, "sh", path, str(max_bytes + 1)])
            if code == 0 and len(out) > max_bytes:
                raise TooLarge(f"cannot read {path}: larger than {max_bytes} bytes")
            if code != 0 and b"No such file" in err:
                raise SandboxNotFound(f"No such file in sandbox {self.name}: {path}")
            if code != 0:
                raise SandboxError(f"cannot read {path}: "
                                   f"{one_line(err.decode(errors='replace'))}")
            return out
        try:
            with self._errors(f"reading {path}"):
                data = tarball.read_single_file(self._get_archive(path), path, max_bytes)
        except ValueError as err:
            raise TooLarge(f"cannot read {path}: {err}") from None
        if data is None:
            raise SandboxError(f"cannot read {path}: it is not a regular file (use download())")
        return data

    def append_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Append ``data`` to the file at ``path`` in the sandbox (created, with ``mode``,
        when missing; its folders too). Done inside the sandbox: nothing is read back, and a
        path that is not a regular file is refused."""
        path = paths.check_sandbox_path(path)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        code, _, err = self._exec_bytes(["/bin/sh", "-c", APPEND_SCRIPT, "sh", path, f"{mode:o}"],
                                        stdin=payload)
        if code != 0:
            raise SandboxError(f"appending to {path} failed: "
                               f"{one_line(err.decode(errors='replace'))}")

    def remove_file(self, path: str, recursive: bool = False) -> None:
        """Remove a file (or, with ``recursive``, a folder tree)."""
        path = paths.check_sandbox_path(path)
        result = self.exec(["rm", "-rf" if recursive else "-f", "--", path], user="0")
        if not result.ok:
            raise SandboxError(f"cannot remove {path}: {one_line(result.stderr)}")

    def file_mode(self, path: str) -> int:
        """The permission bits of ``path`` (SandboxNotFound if it is missing)."""
        path = paths.check_sandbox_path(path)
        result = self.exec(["stat", "-c", "%a", "--", path])
        if not result.ok:
            raise SandboxNotFound(f"No such file in sandbox {self.name}: {path}")
        return int(result.stdout.strip(), 8)

    def exists(self, path: str) -> bool:
        path = paths.check_sandbox_path(path)
        return self.exec(["test", "-e", path]).ok

    def mkdir(self, path: str, parents: bool = True) -> None:
        """Create a folder (and its parents, by default)."""
        path = paths.check_sandbox_path(path)
        result = self.exec(["mkdir", "-p", "--", path] if parents else ["mkdir", "--", path])
        if not result.ok:
            message = one_line(result.stderr)
            if "No such file" in message:
                raise SandboxNotFound(f"cannot create {path}: No such file or directory (parent)")
            raise SandboxError(f"cannot create {path}: {message}")

    def upload(self, local: str | os.PathLike[str], remote: str, *,
               within: str | os.PathLike[str] | None = None,
               max_bytes: int | None = None) -> None:
        """Copy a host file or folder to ``remote`` in the sandbox.

        The host path is read below the folder ``within`` (default: ``/``) without following
        any link on the way; links inside a folder travel as links. At most
        ``max_bytes`` of file content (TooLarge beyond).
        """
        root, source = _host_paths(local, within)
        remote = paths.check_sandbox_path(remote)
        parent, leaf = posixpath.split(remote)
        archive = hostfiles.tree_tar(root, source, leaf, self._owner(), max_bytes)
        if not self._put_archive(parent, archive):
            self.mkdir(parent)
            self._put_archive(parent, archive)

    def download(self, remote: str, local: str | os.PathLike[str], *,
                 within: str | os.PathLike[str] | None = None,
                 max_bytes: int | None = None) -> Path:
        """Copy a file or folder from the sandbox to the host path ``local``; returns it.

        ``local`` is written below the folder ``within`` (default: ``/``), its missing
        folders created, without following any link on the way (one there is an error);
        links and devices in the sandbox's copy are dropped, a sparse file's holes stay
        holes. At most ``max_bytes``, each file counted as its size or its blocks on the
        host's disk, whichever is larger (TooLarge beyond).
        """
        remote = paths.check_sandbox_path(remote)
        root, dest = _host_paths(local, within)
        chunks = self._get_archive(remote)
        try:
            with self._errors(f"downloading {remote}"):
                hostfiles.extract_into(root, dest, chunks, posixpath.basename(remote), max_bytes)
        except ValueError as err:  # an archive member that would land outside, or not fit
            raise SandboxError(f"cannot download {remote}: {err}") from None
        return dest


def _host_paths(local: str | os.PathLike[str],
                within: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """(the folder to walk from, the host path inside it), both absolute, no link resolved
    below the folder: without ``within`` the walk starts at ``/``, so no folder on the way may
    be a link (resolving the path's parent would follow one a sandbox planted there)."""
    path = Path(os.path.normpath(Path(local).expanduser().absolute()))
    if within is None:
        return Path("/"), path
    given = Path(os.path.normpath(Path(within).expanduser().absolute()))
    root = given.resolve()  # the caller's folder itself may be reached through a link
    if path != given and given not in path.parents:
        raise SandboxError(f"host path {local} is not inside {within}")
    return root, root / path.relative_to(given)
