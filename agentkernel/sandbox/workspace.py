"""The copy-on-write workspace: the project's host folder as a sandbox sees it.

The folder is the lower layer of an overlay mount made by the engine (its local volume driver,
``type=overlay``) at the folder's own path in the container; the upper layer, where everything
a cell creates, changes or deletes lands, is another engine volume (with a third as overlay's
work folder). So cells write next to the notebook as on the local kernel, and nothing they do
reaches the host's files: taking results home is an explicit export (``changes`` lists them).
The volumes are named by the workspace's id (one per kernel: a restarted kernel finds its
files) and removed with it (``discard``). Entries holding credentials anywhere in the folder
are hidden: an empty read-only tmpfs over a folder, an empty read-only file over a file.
For a sandbox with a user namespace (Podman), this process mounts the overlay itself, over the
folder with its ids shifted into the namespace (sandbox/shifted.py), and the sandbox gets it as
a bind mount that stays on the host only until the sandbox started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..cache import cache_dir
from ..config.secretscan import secret_entries
from ..engine import Engine, VolumeSummary
from ..errors import ConfigError, SandboxError
from . import shifted
from .request import LABEL_OWNER, owner_label

log = logging.getLogger(__name__)
# "0": the copy-on-write workspace never gets the project through an idmapped mount
# (sandbox/shifted.py), so a Podman sandbox with it keeps the host's root (an operator's way out)
SHIFT_ENV = "AGENTKERNEL_SHIFTED_WORKSPACE"

LABEL_WORKSPACE = "agentkernel.workspace"  # the workspace's id, on each of its volumes
LABEL_ROLE = "agentkernel.workspace.role"  # upper, work or overlay
LABEL_ROOT = "agentkernel.workspace.root"  # the host folder under the overlay
LABEL_SHIFTED = "agentkernel.workspace.shifted"  # on a container: "true", its overlay is ours
# The ids the workspace's files were written with ("uid:gid:count", Engine.id_shift; "" the
# host's), on its upper and work volumes: a workspace keeps them
LABEL_ID_SHIFT = "agentkernel.idshift"
ROLES = ("upper", "work", "overlay")
MOUNT_OPTION_UNSAFE = (",", ":", "\\")
"""Characters the engines' mount option parsers split on: a folder named with one cannot be
an overlay's lower layer."""
MAX_CHANGES = 100_000  # entries a listing reads at most
HIDDEN_FOLDER_BYTES = 4096


@dataclass(frozen=True)
class Change:
    """One entry of the workspace that cells changed: ``kind`` is added, changed or deleted;
    ``path`` is relative to the workspace's root."""

    kind: str
    path: str
    folder: bool = False

    def __str__(self) -> str:
        return f"{self.kind:<8} {self.path}{'/' if self.folder else ''}"


def volume_name(workspace_id: str, role: str) -> str:
    return f"agentkernel-ws-{workspace_id}-{role}"


def volume_names(workspace_id: str) -> list[str]:
    """The workspace's volumes, in the order they can be removed."""
    return [volume_name(workspace_id, role) for role in ("overlay", "upper", "work")]


def check_root(root: str) -> None:
    """ConfigError when ``root`` cannot be an overlay's lower layer."""
    if any(ch in root for ch in MOUNT_OPTION_UNSAFE):
        raise ConfigError(f"the folder {root} cannot be a copy-on-write workspace: its path "
                          f"holds one of {' '.join(MOUNT_OPTION_UNSAFE)}, which the engine's "
                          "mount options cannot carry")


def workspace_mount(engine: Engine, root: str, workspace_id: str,
                    labels: Mapping[str, str], runtime: str | None = None) -> dict[str, Any]:
    """The create request's mount of workspace ``workspace_id`` over host folder ``root``, at
    the folder's own path (``hiding_mounts`` hides its credentials); its upper and work
    volumes are made when missing (kept when they exist: a restarted kernel's files).

    Where the engine gives sandboxes (of OCI ``runtime``) a user namespace and this process
    can shift the folder's ids into it (sandbox/shifted.py), this process mounts the overlay
    itself over the shifted folder and the sandbox gets it as a bind mount, detached from
    the host by ``release_mounts`` once the sandbox started. Otherwise the overlay is a volume
    of the engine's local driver (made again when it was over another folder)."""
    check_root(root)
    names = {role: volume_name(workspace_id, role) for role in ROLES}
    common = {LABEL_OWNER: owner_label(), **labels, LABEL_WORKSPACE: workspace_id}
    upper = engine.volume(names["upper"])
    shift = _id_shift(engine, dict(upper.labels) if upper else None, runtime)
    marked = _shift_label(shift) if shift is not None else ""
    places = _layers(engine, names, {**common, LABEL_ID_SHIFT: marked}, shift, upper)
    if shift is not None:
        detach_leftovers(engine)
        try:
            merged = shifted.mount_overlay(root, workspace_id, shift, places["upper"],
                                           places["work"])
            return {"Type": "bind", "Source": str(merged), "Target": root, "ReadOnly": False}
        except OSError as err:
            log.warning("workspace %s: its sandboxes keep the host's root (no user "
                        "namespace): the folder's ids could not be shifted: %s", root, err)
    options = {"type": "overlay", "device": "overlay",
               "o": f"lowerdir={root},upperdir={places['upper']},workdir={places['work']}"}
    wanted = {**common, LABEL_ROLE: "overlay", LABEL_ROOT: root}
    overlay = engine.create_volume(names["overlay"], wanted, options)  # or the one there
    if overlay.labels.get(LABEL_ROOT) != root or overlay.labels.get(LABEL_ID_SHIFT):
        engine.remove_volume(names["overlay"])  # over another folder, or a shifted one's
        engine.create_volume(names["overlay"], wanted, options)
    return {"Type": "volume", "Source": names["overlay"], "Target": root, "ReadOnly": False}


def _layers(engine: Engine, names: Mapping[str, str], labels: Mapping[str, str],
            shift: tuple[int, int, int] | None, upper: VolumeSummary | None,
            ) -> dict[str, str]:
    """The host folders of the workspace's upper and work volumes (``names``; ``upper``: the
    upper one as the engine described it just now), made with ``labels`` when missing; a new
    upper layer's top belongs to the sandbox's root (``shift``'s ids) when it has a user
    namespace. (The work volume holds nothing of the user's: it is taken as the engine's
    create answers, the one there or a new one.)"""
    if upper is None:
        upper = engine.create_volume(names["upper"], {**labels, LABEL_ROLE: "upper"})
        if shift is not None:  # root inside owns the top
            _chown(upper.mountpoint, shift)
    work = engine.create_volume(names["work"], {**labels, LABEL_ROLE: "work"})
    return _layer_places(names, {"upper": upper, "work": work})


def _layer_places(names: Mapping[str, str], found: Mapping[str, VolumeSummary | None],
                  ) -> dict[str, str]:
    """The host folders of the upper and work volumes ``names`` (``found``: as the engine
    described them); SandboxError when one has none this process can give as an overlay's
    mount option."""
    places = {}
    for role in ("upper", "work"):
        volume = found[role]
        place = volume.mountpoint if volume else None
        if not place or any(ch in place for ch in MOUNT_OPTION_UNSAFE):
            raise SandboxError(f"the workspace volume {names[role]} has no usable folder on "
                               f"the engine's host ({place!r})")
        places[role] = place
    return places


def container_labels(workspace_id: str, root: str, mount: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a container given the workspace's ``mount`` (``workspace_mount``): its
    id (its volumes are in use while the container exists), its folder, and whether the
    overlay is the shifted one this process mounts (a restart makes it again)."""
    return {LABEL_WORKSPACE: workspace_id, LABEL_ROOT: root,
            LABEL_SHIFTED: "true" if mount.get("Type") == "bind" else "false"}


@contextlib.contextmanager
def restart_mounts(engine: Engine, labels: Mapping[str, str]) -> Iterator[None]:
    """While a stopped sandbox (container ``labels``, ``container_labels``) starts again: the
    overlay of its shifted workspace made again, as its bind mount comes from it, and
    detached once it started; nothing for any other sandbox (the engine mounts an overlay
    volume itself)."""
    workspace_id, root = labels.get(LABEL_WORKSPACE), labels.get(LABEL_ROOT)
    names = {role: volume_name(workspace_id, role) for role in ("upper", "work")
             } if workspace_id else {}
    upper = (engine.volume(names["upper"])
             if names and root and labels.get(LABEL_SHIFTED) == "true" else None)
    marked = upper.labels.get(LABEL_ID_SHIFT, "") if upper else ""
    if not (workspace_id and root and marked):
        yield
        return
    shift = tuple(int(part) for part in marked.split(":"))
    places = _layer_places(names, {"upper": upper, "work": engine.volume(names["work"])})
    try:
        shifted.mount_overlay(root, workspace_id, (shift[0], shift[1], shift[2]),
                              places["upper"], places["work"])
    except OSError as err:
        raise SandboxError(f"the workspace over {root} could not be mounted again: {err}"
                           ) from None
    try:
        yield
    finally:
        release_mounts(workspace_id)


def release_mounts(workspace_id: str) -> None:
    """Once the sandbox started (the container holds its own copy of the workspace), detach
    what ``workspace_mount`` mounted on the host for it (nothing when it mounted nothing)."""
    shifted.release(workspace_id)


def _id_shift(engine: Engine, upper: Mapping[str, str] | None,
              runtime: str | None) -> tuple[int, int, int] | None:
    """The ids the workspace's files are shifted by: the engine's user namespace, where this
    process can make the mount, unless the workspace's upper layer was written with other
    ids (a workspace keeps the ids it was made with), or the operator set ``SHIFT_ENV=0``."""
    if os.environ.get(SHIFT_ENV) == "0":
        return None
    shift = engine.id_shift(runtime)
    if shift is None or (upper is not None and upper.get(LABEL_ID_SHIFT, "") !=
                         _shift_label(shift)) or not shifted.possible(engine):
        return None
    return shift


def detach_leftovers(engine: Engine) -> list[str]:
    """Detach what a shifted workspace left mounted on this host and return where: the
    shifted folders and overlays of starts that never finished (their workspace's volumes
    are gone), and overlays an engine mounted over a shifted folder and lost (Podman 4.3,
    under earlier agentkernel releases: ``shifted.overlays``). Best effort (a shifted start
    and ``agentkernel gc --workspaces`` call it)."""
    detached = []
    try:
        mounted = shifted.overlays()
        ids = shifted.leftovers()
        if mounted or ids:
            existing = {volume.name for volume in engine.list_volumes([LABEL_WORKSPACE])}
            for name, path in mounted.items():
                if name not in existing:
                    shifted.detach(path)
                    detached.append(path)
            for workspace_id in ids:
                if volume_name(workspace_id, "upper") not in existing:
                    shifted.release(workspace_id)
                    detached.append(str(shifted.overlay_path(workspace_id)))
    except (OSError, SandboxError) as err:
        log.warning("workspace: mounts left on the host stay: %s", err)
    return detached


def _shift_label(shift: tuple[int, int, int]) -> str:
    return ":".join(map(str, shift))


def _chown(folder: str | None, shift: tuple[int, int, int]) -> None:
    """Give the sandbox's root (``shift``'s uid and gid) the new upper layer's top folder:
    the overlay's root takes its owner from it."""
    if folder:
        os.chown(folder, shift[0], shift[1])


def hiding_mounts(folder: str, target: str) -> list[dict[str, Any]]:
    """Mounts that hide the entries of host ``folder`` (mounted at ``target``) that a
    sandbox must not see (credentials, Jupyter connection files): an empty read-only tmpfs
    over a folder, an empty read-only file over anything else. ConfigError when the folder is
    too large to check."""
    try:
        hidden = secret_entries(Path(folder))
    except ValueError as err:
        raise ConfigError(f"cannot give {folder} to a sandbox: {err} (too many to check for "
                          "credentials); choose a smaller folder") from None
    mounts = []
    for path in hidden:
        inside = str(PurePosixPath(target, path.relative_to(folder)))
        if path.is_dir() and not path.is_symlink():
            mounts.append({"Type": "tmpfs", "Target": inside, "ReadOnly": True,
                           "TmpfsOptions": {"SizeBytes": HIDDEN_FOLDER_BYTES, "Mode": 0o500}})
        else:
            mounts.append({"Type": "bind", "Source": str(_empty_file()), "Target": inside,
                           "ReadOnly": True})
    return mounts


def _empty_file() -> Path:
    """An empty file of ours, mounted read-only over host files a sandbox must not see: in
    the private cache, or for root in /run/agentkernel, where a user namespace's root (others
    to the host's files) may reach it too."""
    if os.geteuid() == 0:
        shifted.MOUNTS.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path = shifted.MOUNTS.parent / "hidden"
    else:
        path = cache_dir() / "hidden"
    if not path.is_file() or path.stat().st_size or path.stat().st_mode & 0o444 != 0o444:
        path.unlink(missing_ok=True)
        path.write_bytes(b"")
        path.chmod(0o444)
    return path


def changes(engine: Engine, workspace_id: str, image: str, root: str) -> list[Change]:
    """What cells changed in the workspace: its upper layer read through the engine (a
    container created for it, never started, the upper volume mounted read-only)."""
    upper = volume_name(workspace_id, "upper")
    if engine.volume_labels(upper) is None:
        return []
    request = {"Image": image, "Entrypoint": ["/bin/sh"], "Cmd": [], "NetworkDisabled": True,
               "Labels": {LABEL_WORKSPACE: workspace_id, LABEL_OWNER: owner_label()},
               # the host's ids, as the sandbox that wrote the layer: an engine that maps
               # ids would otherwise chown the volume for the reader
               "HostConfig": {"NetworkMode": "none", "UsernsMode": "host", "Mounts": [
                   {"Type": "volume", "Source": upper, "Target": "/upper", "ReadOnly": True}]}}
    reader = engine.create_container(request, f"{upper}-reader-{secrets.token_hex(4)}")
    try:
        return list(_read_changes(engine.get_archive(reader, "/upper/."), Path(root)))
    finally:
        engine.remove_container(reader)


def _read_changes(chunks: Iterable[bytes], root: Path) -> Iterator[Change]:
    """The changes an upper layer's tar stream tells: a whiteout (character device 0:0) is a
    deletion, an entry the host folder has too is a change, any other an addition (a folder
    that only holds changes is left out)."""
    with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|") as tar:
        for count, member in enumerate(tar):
            if count >= MAX_CHANGES:
                raise SandboxError(f"the workspace holds more than {MAX_CHANGES} changed "
                                   "entries; export folders by name")
            name = PurePosixPath(member.name)
            parts = [p for p in name.parts if p not in (".", "")]
            if not parts:
                continue
            relative = "/".join(parts)
            on_host = root.joinpath(*parts)
            if member.ischr() and member.devmajor == 0 and member.devminor == 0:
                yield Change("deleted", relative)
            elif not _lexists(on_host):
                yield Change("added", relative, member.isdir())
            elif not member.isdir() or not _is_dir(on_host):
                yield Change("changed", relative, member.isdir())


def _lexists(path: Path) -> bool:
    try:
        path.lstat()
    except OSError:
        return False
    return True


def _is_dir(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISDIR(path.lstat().st_mode)
    return False


class _ChunkReader:
    """A file-like reader over an iterator of byte chunks (tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def discard(engine: Engine, workspace_id: str) -> None:
    """Remove the workspace's volumes (what its cells wrote is gone)."""
    shifted.release(workspace_id)
    for name in volume_names(workspace_id):
        try:
            engine.remove_volume(name)
        except SandboxError as err:
            log.warning("workspace %s: %s", workspace_id, err)


def workspace_volumes(engine: Engine) -> dict[str, list[str]]:
    """Every workspace's volumes on the engine: id -> names."""
    found: dict[str, list[str]] = {}
    for volume in engine.list_volumes([LABEL_WORKSPACE]):
        found.setdefault(volume.labels.get(LABEL_WORKSPACE, ""), []).append(volume.name)
    return found
