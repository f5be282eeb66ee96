"""Find and connect a container engine: a Podman API socket, a Docker socket, or DOCKER_HOST.

``AGENTKERNEL_ENGINE`` = ``auto`` (default) | ``docker`` | ``podman``.
Auto honours ``DOCKER_HOST`` (or ``CONTAINER_HOST``) when set; otherwise it prefers a reachable
Podman socket, then Docker's, as the original tool did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException

from .errors import ConfigError, EngineUnavailable

ENGINE_KINDS = ("auto", "docker", "podman")
# Served by Docker 20.10 and newer and by Podman 4's compatible API; fixed, so that connecting
# costs one request (the "auto" negotiation asks /version).
API_VERSION = "1.41"
START_HINT = (
    "start one with `dockerd &` or `podman system service --time=0 "
    "unix:///run/podman/podman.sock &`, or point DOCKER_HOST at a running engine"
)


def podman_socket_urls() -> list[str]:
    """Where a Podman API socket usually lives, rootful first."""
    urls = ["unix:///run/podman/podman.sock"]
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    urls.append(f"unix://{runtime_dir}/podman/podman.sock")
    return urls


def docker_socket_urls() -> list[str]:
    return ["unix:///var/run/docker.sock"]


@dataclass
class Engine:
    """A connected engine: its kind, address and docker-py client."""

    kind: str
    base_url: str
    client: docker.DockerClient = field(repr=False)

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    @cached_property
    def info(self) -> dict[str, Any]:
        return self.client.info()

    @property
    def ncpu(self) -> int:
        return int(self.info.get("NCPU") or os.cpu_count() or 1)

    @property
    def mem_total_mb(self) -> int:
        return int(self.info.get("MemTotal") or 0) // (1024 * 1024)

    def ping(self) -> bool:
        """True when the engine answers now."""
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def close(self) -> None:
        self.client.close()


def _probe(url: str, timeout: float) -> tuple[docker.DockerClient | None, str, str]:
    """(client, kind, "") if the engine at ``url`` answers a ping, else (None, "", reason).

    The kind comes from the ping's headers (Podman adds ``Libpod-Api-Version``): Podman's
    /version is slow (over a second), so it is never asked.
    """
    if url.startswith("unix://") and not Path(url[len("unix://") :]).exists():
        return None, "", "no such socket"
    try:
        client = docker.DockerClient(base_url=url, version=API_VERSION, timeout=timeout)
        response = client.api._get(client.api._url("/_ping"))
        client.api._raise_for_status(response)
    except DockerException as err:
        return None, "", _short_reason(err)
    except Exception as err:  # requests' connection errors
        return None, "", _short_reason(err)
    client.api.timeout = 120
    kind = "podman" if "Libpod-Api-Version" in response.headers else "docker"
    return client, kind, ""


def _short_reason(err: BaseException) -> str:
    text = str(err)
    for marker in ("Connection refused", "Permission denied", "timed out", "No such file"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:120] if text else type(err).__name__


def requested_kind() -> str:
    """The engine kind asked for by AGENTKERNEL_ENGINE (validated)."""
    kind = (os.environ.get("AGENTKERNEL_ENGINE") or "auto").strip().lower()
    if kind not in ENGINE_KINDS:
        raise ConfigError(
            f"invalid AGENTKERNEL_ENGINE {kind!r}: choose from {', '.join(ENGINE_KINDS)}"
        )
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


def connect_url(kind: str, base_url: str, timeout: float = 5.0) -> Engine:
    """Connect to the engine at ``base_url`` (known to be of ``kind``)."""
    client, actual, reason = _probe(base_url, timeout)
    if client is None:
        raise EngineUnavailable(f"the {kind} engine at {base_url} does not answer ({reason})")
    return Engine(kind=actual, base_url=base_url, client=client)


def connect(kind: str | None = None, timeout: float = 5.0) -> Engine:
    """Connect to the engine ``kind`` (default: AGENTKERNEL_ENGINE, else auto)."""
    kind = kind or requested_kind()
    if kind not in ENGINE_KINDS:
        raise ConfigError(f"invalid engine {kind!r}: choose from {', '.join(ENGINE_KINDS)}")
    tried = []
    for hint, url in candidate_urls(kind):
        client, actual, reason = _probe(url, timeout)
        if client is None:
            tried.append(f"{hint} at {url} ({reason})")
            continue
        if kind != "auto" and actual != kind:
            tried.append(f"{hint} at {url} (answers as {actual})")
            client.close()
            continue
        return Engine(kind=actual, base_url=url, client=client)
    raise EngineUnavailable(f"no container engine answered: tried {'; '.join(tried)}; {START_HINT}")
