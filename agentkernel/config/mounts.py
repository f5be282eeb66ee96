"""Which host folders a sandbox may mount, and how: the engine-socket and home rules."""

from __future__ import annotations

import os
from pathlib import Path

from ..engine.discovery import CONTAINERD_SOCKET_URL, docker_socket_urls, podman_socket_urls
from ..errors import ConfigError
from .hostpaths import forbidden_reason, one_check, protected_paths
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


def check_binds(mounts: list[VolumeSpec], profile: Profile,
                unsafe_host_paths: bool = False) -> tuple[VolumeSpec, ...]:
    """The mounts as the sandbox gets them: host paths resolved once (the engine is given
    exactly the path checked), home and the folders above it read-only; ConfigError for a
    mount the profile, the socket rule or the never-reachable host paths forbid (the last
    lifted only by ``unsafe_host_paths``, the operator's explicit opt-out)."""
    checked = []
    with one_check():
        for mount in mounts:
            if not mount.is_bind:
                checked.append(mount)
                continue
            source = check_host_folder(mount.source, profile, write=not mount.read_only,
                                       unsafe_host_paths=unsafe_host_paths)
            home = Path.home().resolve()
            read_only = mount.read_only or mount.target == "/home/user" or source in (
                home, *home.parents)
            checked.append(VolumeSpec(str(source), mount.target, read_only))
    return tuple(checked)


def check_host_folder(text: str, profile: Profile, write: bool,
                      unsafe_host_paths: bool = False) -> Path:
    """Host folder ``text`` resolved, when a sandbox of ``profile`` may mount it (``write``:
    writable); ConfigError naming the rule otherwise. The one check every way of creating a
    sandbox goes through (magics, extension, CLI, Python API, pool): SandboxConfig.resolve."""
    if not profile.allow_host_mounts:
        raise ConfigError(
            f"profile {profile.name} forbids host mounts ({text}): "
            "use a named volume or --profile moderate"
        )
    source = Path(text).expanduser().resolve()
    exposed = exposed_engine_socket(source)
    if exposed is not None:
        raise ConfigError(
            f"refusing to mount {source}: it is or holds the engine's socket {exposed}, "
            "which would hand the sandbox the whole host"
        )
    if not source.exists():
        raise ConfigError(f"invalid mount {text!r}: no such host folder or file")
    if not unsafe_host_paths:
        reason = forbidden_reason(source, protected_paths(write))
        if reason is not None:
            mode = "writable" if write else "in a sandbox"
            raise ConfigError(
                f"mounting {source} {mode} refused: {reason} (an operator may allow it with "
                "c.SandboxConfig.unsafe_host_paths = True)")
    return source
