"""Where engines listen: which kind the user asked for and which addresses to try, in order.

Standard library only: the configuration's mount rules read the socket paths from here without
loading any engine client.

``AGENTKERNEL_ENGINE`` = ``auto`` (default) | ``docker`` | ``podman``. Auto honours
``DOCKER_HOST`` (or ``CONTAINER_HOST``) when set; otherwise it prefers a reachable Podman socket,
then Docker's, as the original tool did.
"""

from __future__ import annotations

import os

from ..errors import ConfigError

ENGINE_KINDS = ("auto", "docker", "podman")
CONTAINERD_SOCKET_URL = "unix:///run/containerd/containerd.sock"
START_HINT = (
    "start one with `dockerd &` or `podman system service --time=0 "
    "unix:///run/podman/podman.sock &`, or point DOCKER_HOST at a running engine"
)


def podman_socket_urls() -> list[str]:
    """Where a Podman API socket usually lives, rootful first."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return ["unix:///run/podman/podman.sock", f"unix://{runtime_dir}/podman/podman.sock"]


def docker_socket_urls() -> list[str]:
    """Where Docker's API socket lives."""
    return ["unix:///var/run/docker.sock"]


def requested_kind(kind: str | None = None) -> str:
    """``kind``, else the one AGENTKERNEL_ENGINE asks for, validated."""
    source = "engine" if kind else "AGENTKERNEL_ENGINE"
    kind = (kind or os.environ.get("AGENTKERNEL_ENGINE") or "auto").strip().lower()
    if kind not in ENGINE_KINDS:
        raise ConfigError(f"invalid {source} {kind!r}: choose from {', '.join(ENGINE_KINDS)}")
    return kind


def candidate_urls(kind: str) -> list[tuple[str, str]]:
    """(kind-hint, url) pairs to try, in order, for the requested kind."""
    host = os.environ.get("DOCKER_HOST") or os.environ.get("CONTAINER_HOST")
    if kind == "podman":
        urls = [host] if host else []
        return [("podman", u) for u in urls + podman_socket_urls()]
    if kind == "docker":
        return [("docker", u) for u in ([host] if host else docker_socket_urls())]
    if host:
        return [("auto", host)]
    return [("podman", u) for u in podman_socket_urls()] + [
        ("docker", u) for u in docker_socket_urls()
    ]
