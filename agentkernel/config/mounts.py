"""Which host folders a sandbox may mount, and how: the engine-socket and home rules."""

from __future__ import annotations

import os
from pathlib import Path

from ..engine.discovery import CONTAINERD_SOCKET_URL, docker_socket_urls, podman_socket_urls
from ..errors import ConfigError
from .profiles import Profile
from .specs import VolumeSpec

ENGINE_SOCKET_NAMES = ("docker.sock", "podman.sock", "containerd.sock")


def engine_socket_paths() -> list[Path]:
    """Where container engines' API sockets are on this host (present or not), resolved."""
    urls = [*podman_socket_urls(), *docker_socket_urls(), CONTAINERD_SOCKET_URL]
    urls += [os.environ.get(name) or "" for name in ("DOCKER_HOST", "CONTAINER_HOST")]
    return [Path(url[len("unix://"):]).resolve() for url in urls if url.startswith("unix://")]


def exposed_engine_socket(source: Path) -> Path | None:
    """The engine socket a bind mount of ``source`` would put in a sandbox, or None.

    Refused: a known engine socket or any folder above one (``/``, ``/run``...), anything named
    like an engine socket, and a folder that directly holds a file named like one.
    """
    for sock in engine_socket_paths():
        if source == sock or source in sock.parents:
            return sock
    if source.name in ENGINE_SOCKET_NAMES:
        return source
    for name in ENGINE_SOCKET_NAMES:
        if (source / name).exists():
            return source / name
    return None


def check_binds(mounts: list[VolumeSpec], profile: Profile) -> tuple[VolumeSpec, ...]:
    """The mounts as the sandbox gets them: host paths resolved, home and the folders above it
    read-only; ConfigError for a mount the profile or the socket rule forbids."""
    checked = []
    for mount in mounts:
        if not mount.is_bind:
            checked.append(mount)
            continue
        if not profile.allow_host_mounts:
            raise ConfigError(
                f"profile {profile.name} forbids host mounts ({mount.source}): "
                "use a named volume or --profile moderate"
            )
        source = Path(mount.source).expanduser().resolve()
        exposed = exposed_engine_socket(source)
        if exposed is not None:
            raise ConfigError(
                f"refusing to mount {source}: it is or holds the engine's socket {exposed}, "
                "which would hand the sandbox the whole host"
            )
        if not source.exists():
            raise ConfigError(f"invalid mount {mount.source!r}: no such host folder or file")
        home = Path.home().resolve()
        read_only = mount.read_only or mount.target == "/home/user" or source in (
            home, *home.parents)
        checked.append(VolumeSpec(str(source), mount.target, read_only))
    return tuple(checked)
