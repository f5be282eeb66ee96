"""What a container engine backend must do, in agentkernel's own terms.

``agentkernel.sandbox`` talks to an :class:`Engine` only. A backend (Docker, Podman, later a
remote or Kubernetes one) is one module implementing this class; backends are found by kind
through the ``agentkernel.engines`` entry points (see :func:`agentkernel.engine.backend`).

Every method raises only agentkernel's errors: :class:`EngineUnavailable` when the engine does
not answer, :class:`ContainerGone` when the container is not there or not running,
:class:`EngineError` for any other refusal. Container requests use the Docker Engine API's
create body (Podman's compatible API takes the same); a backend that speaks something else
translates it.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import EngineError, SandboxNotRunning, one_line
from .discovery import Endpoint

ProgressCallback = Callable[[dict[str, Any]], None]
STDOUT, STDERR = 1, 2


@dataclass(frozen=True)
class PortMapping:
    """A port as the engine actually bound it.

    ``engine_host`` is set when the engine is remote: the port is served there, on
    ``host_ip`` of that machine (all of its addresses for 0.0.0.0), not on this one.
    """

    host_ip: str
    host_port: int
    container_port: int
    protocol: str
    engine_host: str | None = None

    @property
    def address(self) -> str:
        """Where a client reaches the port: the engine's host for 0.0.0.0 on a remote one."""
        if self.engine_host and self.host_ip in ("0.0.0.0", "::", ""):
            return self.engine_host
        return self.host_ip

    def __str__(self) -> str:
        text = f"{self.address}:{self.host_port} -> {self.container_port}/{self.protocol}"
        if self.engine_host and self.address != self.engine_host:
            text += f" (on the engine's host {self.engine_host})"
        return text


def split_reference(image: str) -> tuple[str, str]:
    """``repo[:tag][@digest]`` -> (repo, tag-or-digest); a port in the registry is not a tag."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    slash, colon = image.rfind("/"), image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, "latest"


def not_available(image: str, reason: str) -> str:
    return (
        f"image {image!r} is not available locally or from its registry "
        f"({one_line(reason, 200)}); pull or build it first "
        "(e.g. `agentkernel image build --tag NAME`)"
    )


class ContainerGone(SandboxNotRunning):
    """The container is not there (``removed``) or not running; the message says which."""

    def __init__(self, message: str, removed: bool = True) -> None:
        super().__init__(message)
        self.removed = removed


class CreateAgain(EngineError):
    """A container was created on an engine fact remembered from an earlier process that the
    engine now contradicts; it is removed, and a create made now gets it right."""


@dataclass(frozen=True)
class ContainerInfo:
    """A container as the engine describes it now."""

    id: str
    labels: Mapping[str, str]
    image: str
    state: str
    running: bool
    oom_killed: bool = False
    exit_code: int | None = None
    uptime_s: float | None = None
    ports: tuple[PortMapping, ...] = ()
    ip: str | None = None
    network: bool = True
    cpus: float | None = None
    memory_mb: int | None = None
    user: str | None = None
    pid: int | None = None  # the main process's, as the engine's host sees it


@dataclass(frozen=True)
class VolumeSummary:
    """A named volume as the engine lists it (``mountpoint``: where its files are on the
    engine's host, when the engine said; ``options``: the local driver's mount options it was
    made with, when the engine said)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    mountpoint: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerSummary:
    """A container as the engine lists it: enough to choose which ones to look at."""

    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    state: str = "unknown"


class ExecStream(Protocol):
    """A command running in a container with a two-way byte stream.

    Without a TTY, ``read_frame`` gives (STDOUT or STDERR, bytes) and ``read`` stdout only
    (stderr kept as a tail); with one, ``recv`` gives the terminal's raw bytes.
    """

    exec_id: str

    def fileno(self) -> int: ...
    def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def read_frame(self) -> tuple[int, bytes] | None: ...
    def read(self) -> bytes: ...
    def recv(self, size: int) -> bytes: ...
    def pending(self) -> int: ...
    def set_timeout(self, seconds: float | None) -> None: ...
    def stderr_tail(self) -> str: ...
    def exit_code(self) -> int | None: ...
    def resize(self, width: int, height: int) -> None: ...
    def close(self) -> None: ...
    def forget(self) -> None: ...


class Engine(ABC):
    """A connected container engine."""

    kind: str
    base_url: str
    storage_quota_refused: str | None = None
    """Why the engine's storage cannot limit a container's writable layer (``StorageOpt``),
    once :meth:`storage_quota_refusal` found out."""

    @classmethod
    @abstractmethod
    def connect(cls, endpoint: Endpoint | str, timeout: float = 5.0) -> Engine:
        """Connect to the engine at ``endpoint`` (a bare URL: no TLS); EngineUnavailable (the
        reason) if it does not answer. May return a more specific backend than ``cls``."""

    def endpoint(self) -> Endpoint:
        """How another process (the host-side reaper, a kernel taking a warm sandbox) reaches
        this same engine (URL, TLS files): pass it to
        :func:`agentkernel.engine.connect_endpoint` there, or start it with ``.env()``."""
        return Endpoint(self.base_url)

    @property
    def remote(self) -> bool:
        """True when the engine may be on another machine (its URL is not a unix socket):
        host paths then name that machine's files, and ports are served there."""
        return self.endpoint().remote

    # -- the engine ------------------------------------------------------------------------
    @property
    @abstractmethod
    def ncpu(self) -> int:
        """CPUs of the engine's host."""

    @property
    @abstractmethod
    def mem_total_mb(self) -> int:
        """Memory of the engine's host in MB (0 when unknown)."""

    @abstractmethod
    def ping(self) -> bool:
        """True when the engine answers now."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    # -- images ----------------------------------------------------------------------------
    @abstractmethod
    def image_present(self, image: str) -> bool:
        """True when ``image`` is in the engine's image store."""

    @abstractmethod
    def pull(self, image: str, progress: ProgressCallback | None = None) -> None:
        """Pull ``image`` from its registry (ImageNotAvailable when that fails)."""

    @abstractmethod
    def import_image(self, chunks: Iterable[bytes], tag: str, changes: Sequence[str]) -> str:
        """Import a root file system tar as image ``tag``; returns the image id."""

    @abstractmethod
    def image_id(self, image: str) -> str:
        """The id (``sha256:...``) of the local image ``image``; ImageNotAvailable if absent."""

    @abstractmethod
    def commit_container(self, container_id: str, tag: str) -> str:
        """Save a container's file system as image ``tag``; returns the image id."""

    # -- networks --------------------------------------------------------------------------
    @abstractmethod
    def create_network(self, name: str, bridge: str, labels: Mapping[str, str]) -> None:
        """Create the bridge network ``name`` on the host interface ``bridge``, with no
        traffic between its containers where the engine can refuse it."""

    @abstractmethod
    def network_bridge(self, name: str) -> str | None:
        """The host interface of bridge network ``name``; None when there is no such network
        (or it names no interface)."""

    # -- volumes ---------------------------------------------------------------------------
    @abstractmethod
    def create_volume(self, name: str, labels: Mapping[str, str],
                      options: Mapping[str, str] | None = None) -> VolumeSummary:
        """The named volume ``name`` (local driver), made with ``labels`` and ``options`` (the
        local driver's mount options: ``type``, ``device``, ``o``, used when a container first
        mounts it) when there is none; one already there is kept as it is, with its own labels
        and options (Docker's and Podman's create answer with it: one request, where asking
        first would take two)."""

    @abstractmethod
    def volume(self, name: str) -> VolumeSummary | None:
        """Volume ``name``: its labels and where its files are on the engine's host (one
        request); None when there is no such volume."""

    def volume_mountpoint(self, name: str) -> str | None:
        """Where volume ``name``'s files are on the engine's host; None when there is no such
        volume."""
        volume = self.volume(name)
        return None if volume is None else volume.mountpoint

    def volume_labels(self, name: str) -> dict[str, str] | None:
        """The labels of volume ``name``; None when there is no such volume."""
        volume = self.volume(name)
        return None if volume is None else dict(volume.labels)

    @abstractmethod
    def list_volumes(self, labels: Sequence[str]) -> list[VolumeSummary]:
        """Volumes carrying every label (``key`` or ``key=value``)."""

    @abstractmethod
    def volume_users(self, name: str) -> list[str]:
        """Names of the containers, running or stopped, that mount volume ``name``."""

    @abstractmethod
    def remove_volume(self, name: str) -> None:
        """Remove volume ``name``; no error when it is gone, EngineError while a container
        uses it."""

    # -- containers ------------------------------------------------------------------------
    @abstractmethod
    def create_container(self, request: dict[str, Any], name: str) -> str:
        """Create a container from a create request; returns its id."""

    def storage_quota_refusal(self, image: str) -> str | None:
        """Why the engine's storage cannot limit the writable layer of a container of
        ``image`` (``HostConfig.StorageOpt``): the engine's own words; None when it can (or
        when it cannot be told)."""
        return None

    @abstractmethod
    def check_runtime(self, container_id: str, runtime: str | None) -> None:
        """Raise ConfigError when the container does not run under ``runtime``."""

    def killed_out_of_memory(self, container_id: str, whole: bool = False) -> bool:
        """Whether the engine recorded an out-of-memory kill in the container, even one
        removed since (False when it cannot tell). ``whole``: the caller knows that such a
        kill ends the whole container (a runtime with its own kernel, gVisor), so an engine
        that records no such event may read it from a SIGKILL."""
        return False

    def runtimes(self) -> list[str]:
        """The OCI runtimes the engine knows by name ([] when it cannot say)."""
        return []

    def id_shift(self, runtime: str | None = None) -> tuple[int, int, int] | None:
        """Where the user namespace this engine gives sandboxes of OCI ``runtime`` puts their
        ids on its host: (uid of root inside, gid of root inside, how many ids follow); None
        when those sandboxes keep the host's ids."""
        return None

    @abstractmethod
    def attach_stdin(self, container_id: str, *, output: bool = False) -> socket.socket:
        """A socket to the container's main process's stdin (its lifeline); with ``output``
        it also carries that process's stdout and stderr, multiplexed as an exec's are
        (``adopt_exec(None, fd)`` reads them)."""

    @abstractmethod
    def start_container(self, container_id: str) -> None:
        """Start a created or stopped container. CreateAgain: it was created on a remembered
        engine fact that turned out stale; remove it and create it again."""

    @abstractmethod
    def stop_container(self, container_id: str, timeout: int = 2) -> None:
        """Stop a container, keeping it."""

    @abstractmethod
    def remove_container(self, container_id: str) -> None:
        """Remove a container, running or not; no error when it is already gone."""

    @abstractmethod
    def inspect_container(self, container_id: str) -> ContainerInfo | None:
        """The container now, or None when it does not exist."""

    @abstractmethod
    def list_containers(self, labels: Sequence[str], all: bool = False) -> list[ContainerSummary]:
        """Containers carrying every label (``key`` or ``key=value``); ``all``: stopped too."""

    @abstractmethod
    def update_limits(self, container_id: str, cpus: float, memory_mb: int) -> None:
        """Change the CPU and memory limits of a running container."""

    # -- inside a container ----------------------------------------------------------------
    @abstractmethod
    def open_exec(self, container_id: str, argv: Sequence[str], *, workdir: str | None = None,
                  user: str | None = None, env: Mapping[str, str] | None = None,
                  stdin: bool = True, tty: bool = False) -> ExecStream:
        """Start ``argv`` in the container with a two-way stream."""

    @abstractmethod
    def adopt_exec(self, exec_id: str | None, fd: int) -> ExecStream:
        """An exec whose socket this process holds as ``fd`` (started by another process, or
        with ``exec_id`` None the main process's stream from ``attach_stdin(output=True)``,
        which the stream's ``close`` leaves open for the lifeline)."""

    @abstractmethod
    def get_archive(self, container_id: str, path: str) -> Iterator[bytes]:
        """A tar stream of ``path``; SandboxNotFound when there is no such file."""

    @abstractmethod
    def put_archive(self, container_id: str, folder: str, archive: bytes) -> bool:
        """Unpack a tar into ``folder``; False when that folder does not exist."""
