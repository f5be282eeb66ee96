"""Where engines listen: which kind the user asked for and which addresses to try, in order.

Standard library only: the configuration's mount rules read the socket paths from here without
loading any engine client.

``AGENTKERNEL_ENGINE`` = ``auto`` (default) | ``docker`` | ``podman``. Auto honours
``DOCKER_HOST`` (or ``CONTAINER_HOST``) when set; otherwise it prefers a reachable Podman socket,
then Docker's, as the original tool did.

An address is an :class:`Endpoint`: the URL and, for ``tcp://`` with TLS, the certificate files,
read from the environment as the docker CLI reads them (``DOCKER_TLS_VERIFY``,
``DOCKER_CERT_PATH`` holding ``ca.pem``, ``cert.pem``, ``key.pem``; ``DOCKER_TLS``). An engine
is *remote* when its URL scheme is not ``unix://`` (``tcp://``, ``ssh://``, ``http(s)://``):
even a tcp address on loopback is often a tunnel to another machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

ENGINE_KINDS = ("auto", "docker", "podman")
CONTAINERD_SOCKET_URL = "unix:///run/containerd/containerd.sock"
START_HINT = (
    "start one with `dockerd &` or `podman system service --time=0 "
    "unix:///run/podman/podman.sock &`, or point DOCKER_HOST at a running engine"
)


LOCAL_SCHEMES = ("unix", "npipe")
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


@dataclass(frozen=True)
class TLSFiles:
    """The files a TLS client of the engine uses (docker CLI names, any paths)."""

    ca: str | None
    cert: str | None
    key: str | None
    verify: bool = True

    @classmethod
    def in_folder(cls, folder: str, verify: bool = True) -> TLSFiles:
        """``ca.pem``, ``cert.pem`` and ``key.pem`` in ``folder`` (DOCKER_CERT_PATH)."""
        paths = [Path(folder, name) for name in TLS_FILES]
        missing = [p.name for p in paths if not p.is_file()]
        if missing and (verify or len(missing) < len(TLS_FILES)):
            raise ConfigError(
                f"invalid DOCKER_CERT_PATH {folder!r}: missing {', '.join(missing)} (it must "
                f"hold {', '.join(TLS_FILES)}, as for the docker CLI)"
            )
        ca, cert, key = (str(p) if p.is_file() else None for p in paths)
        return cls(ca, cert, key, verify)


@dataclass(frozen=True)
class Endpoint:
    """How any process reaches one engine: its URL and, with TLS, the files to use."""

    url: str
    tls: TLSFiles | None = None

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0].lower() if "://" in self.url else "unix"

    @property
    def remote(self) -> bool:
        """True unless the URL names a socket on this machine (``unix://``)."""
        return self.scheme not in LOCAL_SCHEMES

    @property
    def host(self) -> str:
        """The engine's host name as the URL gives it ("" for a local socket)."""
        return (urlsplit(self.url).hostname or "") if self.remote else ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (for another process: :meth:`from_dict`)."""
        return {"url": self.url, "tls": asdict(self.tls) if self.tls else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Endpoint:
        tls = data.get("tls")
        return cls(str(data["url"]), TLSFiles(**tls) if tls else None)

    def env(self) -> dict[str, str]:
        """The docker CLI's variables naming this engine, for a process started from here."""
        env = {"DOCKER_HOST": self.url}
        if self.tls is not None:
            folders = {str(Path(p).parent) for p in (self.tls.ca, self.tls.cert, self.tls.key) if p}
            names = {Path(p).name for p in (self.tls.ca, self.tls.cert, self.tls.key) if p}
            if len(folders) != 1 or not names <= set(TLS_FILES):
                raise ConfigError(
                    f"the TLS files of {self.url} are not one folder of {', '.join(TLS_FILES)}: "
                    "pass the endpoint itself (Endpoint.to_dict) instead of DOCKER_CERT_PATH"
                )
            env["DOCKER_CERT_PATH"] = folders.pop()
            env["DOCKER_TLS_VERIFY" if self.tls.verify else "DOCKER_TLS"] = "1"
        return env

    def __str__(self) -> str:
        return self.url + (" (TLS)" if self.tls else "")


def endpoint_from_env(url: str, environ: Mapping[str, str] | None = None) -> Endpoint:
    """``url`` with the TLS settings the docker CLI would use for it (only for tcp://)."""
    environ = os.environ if environ is None else environ
    verify = bool(environ.get("DOCKER_TLS_VERIFY"))
    wants_tls = verify or bool(environ.get("DOCKER_TLS")) or url.startswith("https://")
    if not url.startswith(("tcp://", "https://")) or not wants_tls:
        return Endpoint(url)
    folder = environ.get("DOCKER_CERT_PATH") or str(Path.home() / ".docker")
    return Endpoint(url, TLSFiles.in_folder(folder, verify))


def remote_engine_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The engine URL the environment names (DOCKER_HOST, CONTAINER_HOST) when that engine is
    remote (not ``unix://``), else None: what a default host mount must not assume."""
    environ = os.environ if environ is None else environ
    host = environ.get("DOCKER_HOST") or environ.get("CONTAINER_HOST")
    return host if host and Endpoint(host).remote else None


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


def candidate_endpoints(kind: str) -> list[tuple[str, Endpoint]]:
    """(kind-hint, endpoint) pairs to try, in order, for the requested kind."""
    host = os.environ.get("DOCKER_HOST") or os.environ.get("CONTAINER_HOST")
    given = [endpoint_from_env(host)] if host else []
    if kind == "podman":
        return [("podman", e) for e in given + [Endpoint(u) for u in podman_socket_urls()]]
    if kind == "docker":
        return [("docker", e) for e in (given or [Endpoint(u) for u in docker_socket_urls()])]
    if given:
        return [("auto", given[0])]
    return [("podman", Endpoint(u)) for u in podman_socket_urls()] + [
        ("docker", Endpoint(u)) for u in docker_socket_urls()
    ]
