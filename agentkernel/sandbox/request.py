"""The create request: what each option of an EffectiveConfig does to the container.

The request is the Docker Engine API's container-create body, which Podman's compatible API
takes too (an engine backend that speaks something else translates it). This is the one table
of run options: an option added in :mod:`agentkernel.config.options` takes effect here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from ..config import EffectiveConfig
from ..config.options import DEFAULT_DISK_MB

LABEL = "agentkernel.sandbox"
LABEL_OWNER = "agentkernel.owner"
LABEL_PERSISTENT = "agentkernel.persistent"
LABEL_PROFILE = "agentkernel.profile"
CPU_PERIOD = 100_000
TMPFS_MAX_MB = 256
MB = 1024 * 1024
# The container's main process: wait on stdin, exit at EOF (the lifeline, see ARCHITECTURE.md).
HOLD_SCRIPT = "while read -r _; do :; done; exit 0"
HOLD_COMMAND = ["/bin/sh", "-c", HOLD_SCRIPT]


def tmpfs_mb(memory_mb: int | None) -> int:
    """Size of a sandbox's tmpfs mounts: half its memory limit, at most TMPFS_MAX_MB.

    A tmpfs keeps its files in memory charged to the container's memory limit, so a tmpfs as
    large as that limit would end a disk-filling cell with an OOM kill instead of ENOSPC.
    """
    return TMPFS_MAX_MB if not memory_mb else max(1, min(TMPFS_MAX_MB, memory_mb // 2))


def storage_opt(eff: EffectiveConfig) -> dict[str, str] | None:
    """The writable root's size limit (``disk_mb``), for an engine whose storage can apply
    one; none for a read-only root (its tmpfs mounts are bounded already)."""
    size = DEFAULT_DISK_MB if eff.disk_mb is None else eff.disk_mb
    return {"size": f"{size}M"} if size and not eff.read_only else None


def owner_label(pid: int | None = None) -> str:
    """Who owns the sandboxes this process creates (or process ``pid``, which it creates
    them for): ``host:pid``."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def create_request(eff: EffectiveConfig, volumes: Sequence[tuple[str, str]] = (),
                   main: Sequence[str] | None = None,
                   mounts: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The create body for a sandbox of ``eff``, with the named ``volumes`` (name, target)
    mounted read-only and ``mounts`` (the engine's mount objects: the workspace, what hides
    credentials) as given.

    An ephemeral sandbox (not ``persistent``) gets an open, attach-once stdin and is removed by
    the engine when it exits: its main process ends at stdin's EOF, when its owner is gone.
    ``main`` replaces that process (HOLD_COMMAND) with one that also ends at that EOF; its
    output goes to whoever attached, not to the engine's logs.
    """
    ephemeral = not eff.persistent
    host: dict[str, Any] = {
        "AutoRemove": ephemeral,
        "Init": True,
        "ReadonlyRootfs": eff.read_only,
        "NetworkMode": (eff.network_name or None) if eff.network else "none",
        "PidsLimit": eff.pids_limit,
        "Runtime": eff.runtime,
        "ShmSize": eff.shm_size_mb * MB if eff.shm_size_mb else None,
        "Binds": [f"{v.source}:{v.target}:{'ro' if v.read_only else 'rw'}"
                  for v in eff.binds] or None,
        "Tmpfs": {path: f"rw,nosuid,nodev,size={tmpfs_mb(eff.memory_mb)}m"
                  for path in eff.tmpfs} or None,
        "Mounts": [{"Type": "volume", "Source": name, "Target": target, "ReadOnly": True}
                   for name, target in volumes] + list(mounts) or None,
        "PortBindings": {
            f"{p.container_port}/{p.protocol}": [
                {"HostIp": p.host_ip, "HostPort": str(p.host_port or "")}]
            for p in eff.ports
        } or None,
        "LogConfig": {"Type": "none", "Config": {}} if main else None,
        "StorageOpt": storage_opt(eff),
    }
    if eff.memory_mb:
        host.update(Memory=eff.memory_mb * MB, MemorySwap=eff.memory_mb * MB)
    if eff.cpus:
        host.update(CpuPeriod=CPU_PERIOD, CpuQuota=int(eff.cpus * CPU_PERIOD))
    if eff.profile.cap_add is not None:
        host.update(CapDrop=["ALL"], CapAdd=list(eff.profile.cap_add) or None)
    if eff.profile.no_new_privileges:
        host.update(SecurityOpt=["no-new-privileges"])
    labels = {
        LABEL: eff.name,
        LABEL_OWNER: owner_label(),
        LABEL_PERSISTENT: "true" if eff.persistent else "false",
        LABEL_PROFILE: eff.profile.name,
        **eff.labels,
    }
    request = {
        "Image": eff.image,
        "Entrypoint": list(main or HOLD_COMMAND),
        "Cmd": [],
        "Hostname": eff.hostname,
        "Labels": labels,
        "Env": [f"{key}={value}" for key, value in eff.env.items()] or None,
        "WorkingDir": eff.workdir,
        "User": eff.user,
        "ExposedPorts": {f"{p.container_port}/{p.protocol}": {} for p in eff.ports} or None,
        "OpenStdin": True,
        "StdinOnce": ephemeral,
        "AttachStdin": ephemeral,
        "AttachStdout": ephemeral,
        "AttachStderr": ephemeral,
        "Tty": False,
        "HostConfig": _without_none(host),
    }
    return _without_none(request)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
