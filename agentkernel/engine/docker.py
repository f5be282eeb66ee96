"""The Docker backend: the Docker Engine API through docker-py.

Also the base of the Podman backend, whose compatible API takes the same requests. This module
is the one place where docker-py's exceptions become agentkernel's (:func:`engine_errors`).

Remote engines: ``tcp://`` with TLS (the docker CLI's variables, see :mod:`.discovery`) and
``ssh://user@host[:port]`` (docker-py over paramiko, running ``docker system dial-stdio`` on that
host; its keys and known_hosts are the user's). Exec streams to them are opened over our own TLS
connection (:mod:`.tlsconn`, on :mod:`.transport` as the reaper is) or the SSH channel, and
served to the rest of agentkernel as a local socket (:mod:`.relay`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import requests

from ..errors import (
    EngineError,
    EngineUnavailable,
    ImageNotAvailable,
    SandboxConflict,
    SandboxError,
    SandboxNotFound,
    one_line,
)
from . import service
from .base import (
    ContainerGone,
    ContainerInfo,
    ContainerSummary,
    Engine,
    ExecStream,
    PortMapping,
    ProgressCallback,
    VolumeSummary,
    not_available,
    split_reference,
)
from .discovery import Endpoint
from .dockerpy import (
    APIError,
    DockerException,
    ImageNotFound,
    NotFound,
    TLSConfig,
    docker,
    hijacked_socket,
    ssh_transport,
)
from .execstream import DockerExecStream
from .relay import relay
from .tlsconn import client_context, hijack
from .transport import API_VERSION

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 120
CPU_PERIOD = 100_000
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"  # a bridge network's host interface
IMPORT_CHUNK = 1 << 20
QUOTA_RECORD = "storage-quota"  # why the storage refuses a size limit, per engine service
BUSY_RETRIES, BUSY_WAIT_S = 4, 0.5  # a removal refused on a busy mount: tries again, spaced
# "0": a container joins its network during its start (DockerEngine._joins_after_start)
JOIN_AFTER_START = os.environ.get("AGENTKERNEL_JOIN_AFTER_START", "1") != "0"


_QUOTA_LOCK = threading.Lock()  # one storage quota question at a time (once per engine)


def _explanation(err: BaseException) -> str:
    text = err.explanation if isinstance(err, APIError) and err.explanation else str(err)
    return one_line(text) or type(err).__name__


@contextlib.contextmanager
def engine_errors(engine: DockerEngine, action: str) -> Iterator[None]:
    """Translate docker-py's failures during ``action`` into agentkernel's errors."""
    try:
        yield
    except SandboxError:
        raise
    except NotFound as err:
        raise ContainerGone(f"{action}: {_explanation(err)}") from None
    except APIError as err:
        text = _explanation(err)
        if "no such container" in text.lower():  # Podman answers 500 while removing one
            raise ContainerGone(f"{action}: {text}") from None
        if err.status_code == 409 and "not running" in text.lower():
            raise ContainerGone(f"{action}: {text}", removed=False) from None
        if "is already in use" in text:  # a create's name (Podman answers 500, Docker 409)
            raise SandboxConflict(f"{action} failed: {text}") from None
        raise EngineError(f"{action} failed: {text}") from None
    except (requests.ConnectionError, ConnectionError, DockerException) as err:
        raise EngineUnavailable(
            f"the container engine at {engine.base_url} stopped answering while {action} "
            f"({one_line(err, 120)})"
        ) from None


def new_client(endpoint: Endpoint, timeout: float) -> docker.DockerClient:
    """A docker-py client for ``endpoint`` (TLS from its files; ssh:// over paramiko).

    Its TLS is :func:`.transport.tls_context`'s policy, applied by requests and urllib3: with
    ``verify`` the CA and the host name are checked, without it neither (as the docker CLI's
    ``DOCKER_TLS``); tests/unit/test_transport.py holds both to it."""
    if endpoint.scheme == "ssh":
        ssh_transport()
    tls = None
    if endpoint.tls is not None:
        files = endpoint.tls
        tls = TLSConfig(client_cert=(files.cert, files.key) if files.cert else None,
                        ca_cert=files.ca if files.verify else None, verify=files.verify)
    client = docker.DockerClient(base_url=endpoint.url, version=API_VERSION, timeout=timeout,
                                 tls=tls or False, use_ssh_client=False)
    if tls is not None:
        # requests would let REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace the engine's CA
        client.api.trust_env = False
    return client


def probe(endpoint: Endpoint, timeout: float) -> tuple[docker.DockerClient | None, str, str]:
    """(client, kind, "") if the engine at ``endpoint`` answers a ping, else (None, "", reason).

    The kind comes from the ping's headers (Podman adds ``Libpod-Api-Version``): Podman's
    /version is slow (over a second), so it is never asked.
    """
    url = endpoint.url
    if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
        return None, "", "no such socket"
    try:
        client = new_client(endpoint, timeout)
        response = client.api.get(f"{client.api.base_url}/_ping", timeout=timeout)
        response.raise_for_status()
    except Exception as err:  # docker-py's and requests' connection errors
        return None, "", _short_reason(err)
    client.api.timeout = REQUEST_TIMEOUT
    kind = "podman" if "Libpod-Api-Version" in response.headers else "docker"
    return client, kind, ""


def _volume_summary(answer: Any, name: str) -> VolumeSummary:
    """A volume as the engine's inspect or create answered it."""
    found = answer if isinstance(answer, dict) else {}
    return VolumeSummary(found.get("Name") or name, dict(found.get("Labels") or {}),
                         found.get("Mountpoint") or None, dict(found.get("Options") or {}))


def _short_reason(err: BaseException) -> str:
    text = str(err)
    for marker in ("Connection refused", "Permission denied", "timed out", "No such file"):
        if marker in text:
            return marker.lower()
    return one_line(text, 120) or type(err).__name__


class DockerEngine(Engine):
    """An engine reached through docker-py (Docker, or Podman's compatible API)."""

    kind = "docker"

    def __init__(self, endpoint: Endpoint | str, client: docker.DockerClient) -> None:
        self._endpoint = Endpoint(endpoint) if isinstance(endpoint, str) else endpoint
        self.base_url = self._endpoint.url
        self.client = client
        self.api: docker.APIClient = client.api
        self._tls_context = (client_context(self._endpoint.tls)
                             if self._endpoint.tls is not None else None)
        self._joining: dict[str, str] = {}  # container -> the network it joins once started
        # each volume as the engine last described it to this process (create and inspect)
        self._volumes_seen: dict[str, VolumeSummary] = {}

    @classmethod
    def connect(cls, endpoint: Endpoint | str, timeout: float = 5.0) -> DockerEngine:
        """The engine at ``endpoint``; Podman answers as a :class:`PodmanEngine`."""
        endpoint = Endpoint(endpoint) if isinstance(endpoint, str) else endpoint
        client, kind, reason = probe(endpoint, timeout)
        if client is None:
            raise EngineUnavailable(reason)
        if kind == "podman":
            from .podman import PodmanEngine

            return PodmanEngine(endpoint, client)
        return DockerEngine(endpoint, client)

    def endpoint(self) -> Endpoint:
        return self._endpoint

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    _quota_asked = False

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        return engine_errors(self, action)

    # -- the engine ------------------------------------------------------------------------
    @cached_property
    def _info(self) -> dict[str, Any]:
        with self._errors("asking the engine about its host"):
            return self.client.info()

    @property
    def ncpu(self) -> int:
        return int(self._info.get("NCPU") or os.cpu_count() or 1)

    @property
    def mem_total_mb(self) -> int:
        return int(self._info.get("MemTotal") or 0) // (1024 * 1024)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def close(self) -> None:
        self.client.close()

    # -- images ----------------------------------------------------------------------------
    def image_present(self, image: str) -> bool:
        with self._errors(f"checking image {image}"):
            try:
                self.api.inspect_image(image)
            except (ImageNotFound, NotFound):
                return False
        return True

    def pull(self, image: str, progress: ProgressCallback | None = None) -> None:
        repo, tag = split_reference(image)
        try:
            for event in self.api.pull(repo, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise ImageNotAvailable(not_available(image, str(event["error"])))
                if progress is not None:
                    progress(event)
        except ImageNotAvailable:
            raise
        except Exception as err:  # refused, connection reset mid-pull, malformed stream
            raise ImageNotAvailable(not_available(image, _explanation(err))) from None

    def import_image(self, chunks: Iterable[bytes], tag: str, changes: Sequence[str]) -> str:
        """Import untagged, then tag: Podman 4.3's compatible import ignores the name."""
        repo, version = split_reference(tag)
        try:
            answer = self.api.import_image_from_data(_rechunk(iter(chunks)),
                                                     changes=list(changes))
        except (APIError, requests.ConnectionError) as err:
            raise EngineError(f"the engine refused the image import: {_explanation(err)}"
                              ) from None
        image_id = _imported_id(answer)
        with self._errors(f"tagging {image_id[:19]} as {tag}"):
            self.api.tag(image_id, self._local_repo(repo), version)
        return image_id

    def _local_repo(self, repo: str) -> str:
        """The name an imported image is tagged with."""
        return repo

    def image_id(self, image: str) -> str:
        try:
            with self._errors(f"inspecting image {image}"):
                return str(self.api.inspect_image(image)["Id"])
        except ContainerGone:  # 404: no such image
            raise ImageNotAvailable(not_available(image, "not in the engine's image store")
                                    ) from None

    def commit_container(self, container_id: str, tag: str) -> str:
        repo, version = split_reference(tag)
        with self._errors(f"saving the container as image {tag}"):
            answer = self.api.commit(container_id, repository=self._local_repo(repo),
                                     tag=version)
        return str(answer.get("Id") or answer.get("id") or "")

    # -- networks --------------------------------------------------------------------------
    def create_network(self, name: str, bridge: str, labels: Mapping[str, str]) -> None:
        with self._errors(f"creating network {name}"):
            self.api.create_network(name, driver="bridge", labels=dict(labels), options={
                BRIDGE_NAME_OPTION: bridge, "com.docker.network.bridge.enable_icc": "false"})

    def network_bridge(self, name: str) -> str | None:
        try:
            with self._errors(f"inspecting network {name}"):
                options = self.api.inspect_network(name).get("Options") or {}
        except ContainerGone:  # 404
            return None
        return options.get(BRIDGE_NAME_OPTION) or None

    # -- volumes ---------------------------------------------------------------------------
    def create_volume(self, name: str, labels: Mapping[str, str],
                      options: Mapping[str, str] | None = None) -> VolumeSummary:
        with self._errors(f"creating volume {name}"):
            made = self.api.create_volume(name, driver="local", labels=dict(labels),
                                          driver_opts=dict(options) if options else None)
        summary = self._volumes_seen[name] = _volume_summary(made, name)
        return summary

    def volume(self, name: str) -> VolumeSummary | None:
        try:
            with self._errors(f"inspecting volume {name}"):
                found = self.api.inspect_volume(name)
        except ContainerGone:  # 404
            self._volumes_seen.pop(name, None)
            return None
        except EngineError as err:  # Podman answers 500 for a missing volume
            if "no such volume" in str(err).lower():
                self._volumes_seen.pop(name, None)
                return None
            raise
        summary = self._volumes_seen[name] = _volume_summary(found, name)
        return summary

    def list_volumes(self, labels: Sequence[str]) -> list[VolumeSummary]:
        with self._errors("listing volumes"):
            found = self.api.volumes(filters={"label": list(labels)}) or {}
        return [_volume_summary(v, v["Name"]) for v in found.get("Volumes") or []]

    def volume_users(self, name: str) -> list[str]:
        with self._errors(f"listing the users of volume {name}"):
            found = self.api.containers(all=True, filters={"volume": name})
        return [str((c.get("Names") or [c["Id"][:12]])[0]).lstrip("/") for c in found]

    def remove_volume(self, name: str) -> None:
        self._volumes_seen.pop(name, None)
        try:
            with self._errors(f"removing volume {name}"):
                self.api.remove_volume(name)
        except ContainerGone:
            pass
        except EngineError as err:
            if "no such volume" not in str(err).lower():
                raise

    # -- containers ------------------------------------------------------------------------
    def create_container(self, request: dict[str, Any], name: str) -> str:
        """Create; a container bound for a network of the operator's that it may join after
        its start (``_joins_after_start``) leaves it until ``start_container``."""
        with self._errors(f"creating sandbox container {name}"):
            container_id = self.api.create_container_from_config(request, name)["Id"]
        network = self._joins_after_start(request.get("HostConfig", {}))
        if network is not None:
            try:
                with self._errors(f"creating sandbox container {name}"):
                    self.api.disconnect_container_from_network(container_id, network)
            except SandboxError:
                with contextlib.suppress(SandboxError):
                    self.remove_container(container_id)
                raise
            self._joining[container_id] = network
        return container_id

    def _joins_after_start(self, host: Mapping[str, Any]) -> str | None:
        """The network a container of ``host`` (its HostConfig) joins once started, not
        during its start: a network of its own name (not none, host, bridge or another
        container's), when it publishes no port (Docker maps ports at the join) and runs
        under runc (gVisor reads its interfaces once, at its start). Docker's start of a
        container on such a network takes 0.1 s more (its endpoint and the embedded DNS
        server's rules, 0.29 s against 0.18 s here); the join after it (0.09 s) overlaps the
        sandbox's own start (its runner importing IPython, 0.2 s). None: joined at the start."""
        network = host.get("NetworkMode") or ""
        if (not JOIN_AFTER_START or network in ("", "none", "host", "bridge", "default")
                or ":" in network or host.get("PortBindings")):
            return None
        runtime = host.get("Runtime") or self._info.get("DefaultRuntime") or "runc"
        return network if runtime == "runc" else None

    def storage_quota_refusal(self, image: str) -> str | None:
        """Asked once per engine service (``service.py``): a container of ``image`` created
        with a size limit, never started, removed at once. (Not the sandbox's own create:
        Podman can hang on a create made again after one refused for its size limit, when a
        volume was mounted.)"""
        with _QUOTA_LOCK:
            if not self._quota_asked:
                known, refused = service.recorded(QUOTA_RECORD, self.base_url, self._service)
                if not known or not (refused is None or isinstance(refused, str)):
                    refused, definite = self._ask_storage_quota(image)
                    if definite:
                        service.record(QUOTA_RECORD, self.base_url, self._service, refused)
                self.storage_quota_refused, self._quota_asked = refused, True
            return self.storage_quota_refused

    def _ask_storage_quota(self, image: str) -> tuple[str | None, bool]:
        """(why the engine refused a size limit, or None; whether that answer is the
        storage's: not when the engine failed for another reason)."""
        request = {"Image": image, "Entrypoint": ["true"], "Cmd": [], "NetworkDisabled": True,
                   "Labels": {"agentkernel.probe": "storage-quota"},
                   "HostConfig": {"NetworkMode": "none", "StorageOpt": {"size": "64M"}}}
        try:
            probe = self.api.create_container_from_config(request, None)["Id"]
        except APIError as err:
            text = _explanation(err)
            if any(words in text.lower() for words in ("storage-opt", "storage opt")):
                # overlay2 and Podman's overlay limit a layer only on xfs mounted with pquota
                return one_line(text.rpartition(": ")[2], 160), True
            return None, False  # some other trouble: the sandbox's own create will say it
        except (requests.ConnectionError, ConnectionError, DockerException):
            return None, False
        with contextlib.suppress(SandboxError):
            self.remove_container(probe)
        return None, True

    @cached_property
    def _service(self) -> str | None:
        """The engine process serving a local socket, when it can be told (``service.py``)."""
        return service.service_identity(self.base_url)

    def check_runtime(self, container_id: str, runtime: str | None) -> None:
        """Docker refuses an unknown runtime at create: nothing left to check."""

    def killed_out_of_memory(self, container_id: str, whole: bool = False,
                             within: float = 86400.0) -> bool:
        """Whether the engine recorded an out-of-memory kill in the container in the last
        ``within`` seconds: its events outlive a container removed since (under gVisor the
        whole sandbox is the process the host kills)."""
        now = time.time()
        with self._errors("reading the engine's events"):
            events = self.api.events(since=f"{now - within:.9f}", until=f"{now:.9f}",
                                     filters={"container": [container_id], "event": ["oom"]},
                                     decode=True)
            try:
                return any(event.get("status", event.get("Action")) == "oom"
                           for event in events)
            finally:
                with contextlib.suppress(Exception):
                    events.close()

    def runtimes(self) -> list[str]:
        """The OCI runtimes dockerd knows by name (asked afresh: set-up reloads them)."""
        with self._errors("asking docker for its runtimes"):
            return list(self.client.info().get("Runtimes") or {})

    def attach_stdin(self, container_id: str, *, output: bool = False) -> socket.socket:
        """Over TLS the socket is the TLS connection's own: a lifeline without ``output`` is
        never read or written, only held and closed, so its file descriptor may be handed to
        another process like a plain one (``output`` is for local engines)."""
        params = {"stdin": 1, "stream": 1, **({"stdout": 1, "stderr": 1} if output else {})}
        with self._errors("attaching the sandbox's lifeline"):
            hijacked = self.api.attach_socket(container_id, params=params)
        return self._local_socket(hijacked)

    def _local_socket(self, hijacked: Any) -> socket.socket:
        """A hijacked connection as a socket this process (or a child) can use: an SSH
        channel is relayed through a local socket pair."""
        if self._endpoint.scheme == "ssh":
            return relay(hijacked)
        return hijacked_socket(hijacked)

    def start_container(self, container_id: str) -> None:
        """Start; a container left off its network at create joins it now, before anything
        of the caller's runs in it (a failure to join is a failed start)."""
        network = self._joining.pop(container_id, None)
        with self._errors("starting the sandbox"):
            self.api.start(container_id)
        if network is not None:
            with self._errors(f"joining the sandbox to the network {network}"):
                self.api.connect_container_to_network(container_id, network)

    def stop_container(self, container_id: str, timeout: int = 2) -> None:
        with contextlib.suppress(ContainerGone), self._errors("stopping the sandbox"):
            self.api.stop(container_id, timeout=timeout)

    def remove_container(self, container_id: str) -> None:
        """Remove it (force). A removal the engine fails on a mount of the container's still
        busy (Podman 4.3: "unlinkat .../userdata/shm: device or resource busy", seen once in
        CI while other sandboxes started) is tried again, up to BUSY_RETRIES times."""
        self._joining.pop(container_id, None)  # created, never started
        for attempt in range(BUSY_RETRIES + 1):
            try:
                with self._errors("removing the sandbox"):
                    self.api.remove_container(container_id, force=True)
                return
            except ContainerGone:
                return
            except EngineError as err:
                if "already in progress" in str(err):  # the engine is removing it already
                    return
                if "resource busy" not in str(err) or attempt == BUSY_RETRIES:
                    raise
                log.info("removing %s: %s; trying again", container_id[:12], one_line(err))
                time.sleep(BUSY_WAIT_S)

    def inspect_container(self, container_id: str) -> ContainerInfo | None:
        try:
            with self._errors("inspecting the sandbox"):
                attrs = self.api.inspect_container(container_id)
        except ContainerGone as gone:
            if gone.removed:
                return None
            raise
        return container_info(attrs, self._endpoint.host or None)

    def list_containers(self, labels: Sequence[str], all: bool = False) -> list[ContainerSummary]:
        with self._errors("listing sandboxes"):
            found = self.api.containers(all=all, filters={"label": list(labels)})
        return [ContainerSummary(c["Id"], c.get("Labels") or {}, str(c.get("State") or
                                                                       "unknown").lower())
                for c in found]

    def update_limits(self, container_id: str, cpus: float, memory_mb: int) -> None:
        quota, memory = int(cpus * CPU_PERIOD), memory_mb * 1024 * 1024
        with self._errors("resizing the sandbox"):
            self.api.update_container(container_id, cpu_period=CPU_PERIOD, cpu_quota=quota,
                                      mem_limit=memory, memswap_limit=memory)

    # -- inside a container ----------------------------------------------------------------
    def open_exec(self, container_id: str, argv: Sequence[str], *, workdir: str | None = None,
                  user: str | None = None, env: Mapping[str, str] | None = None,
                  stdin: bool = True, tty: bool = False) -> ExecStream:
        with self._errors(f"starting {list(argv)[:3]} in the sandbox"):
            created = self.api.exec_create(
                container_id, list(argv), stdin=stdin, stdout=True, stderr=True, tty=tty,
                workdir=workdir, user=user or "", environment=dict(env or {}) or None,
            )
            if self._tls_context is not None:
                sock = relay(self._tls_hijack(f"/exec/{created['Id']}/start",
                                              {"Detach": False, "Tty": tty}))
            else:
                sock = self._local_socket(self.api.exec_start(created["Id"], tty=tty,
                                                              socket=True))
        return DockerExecStream(self.api, created["Id"], sock, tty=tty)

    def _tls_hijack(self, path: str, body: dict[str, Any]) -> Any:
        """A TLS connection of our own carrying ``path``'s stream (see :mod:`.tlsconn`)."""
        url = self.api.base_url  # https://host:port
        host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
        assert self._tls_context is not None
        return hijack(host.strip("[]"), int(port), self._tls_context, path, body,
                      REQUEST_TIMEOUT)

    def adopt_exec(self, exec_id: str | None, fd: int) -> ExecStream:
        return DockerExecStream(self.api, exec_id, socket.socket(fileno=fd))

    def get_archive(self, container_id: str, path: str) -> Iterator[bytes]:
        try:
            with self._errors(f"reading {path}"):
                stream, _stat = self.api.get_archive(container_id, path)
        except ContainerGone:
            if self.inspect_container(container_id) is None:
                raise
            raise SandboxNotFound(f"No such file in the sandbox: {path}") from None
        return _translated(self, stream, f"reading {path}")

    def put_archive(self, container_id: str, folder: str, archive: bytes) -> bool:
        try:
            with self._errors(f"writing into {folder}"):
                return bool(self.api.put_archive(container_id, folder, archive))
        except ContainerGone:
            if self.inspect_container(container_id) is None:
                raise
            return False
        except EngineError as err:
            text = str(err).lower()
            if "no such file" in text or "not a directory" in text:
                return False
            raise


def _translated(engine: DockerEngine, chunks: Iterable[bytes], action: str) -> Iterator[bytes]:
    """``chunks`` with the engine's failures while streaming them translated."""
    with engine_errors(engine, action):
        yield from chunks


# -- requests and answers ---------------------------------------------------------------------
def _rechunk(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Group small tar blocks into ~1 MiB pieces for the upload."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        if len(pending) >= IMPORT_CHUNK:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


def _imported_id(answer: str) -> str:
    """The image id in the import endpoint's JSON-lines answer; EngineError on its errors."""
    events = [json.loads(line) for line in answer.splitlines() if line.strip()]
    image_id = ""
    for event in events:
        if event.get("error"):
            raise EngineError(f"the engine refused the image import: {event['error']}")
        for key in ("id", "status"):
            value = str(event.get(key) or "")
            if value.startswith("sha256:"):
                image_id = value
    if not image_id:
        raise EngineError(f"the image import gave no image id: {str(events)[:200]}")
    return image_id


def container_info(attrs: dict[str, Any], engine_host: str | None = None) -> ContainerInfo:
    """A container's inspect answer in our terms (``engine_host``: a remote engine's host,
    where its published ports are served)."""
    config, host, state = attrs.get("Config") or {}, attrs.get("HostConfig") or {}, attrs["State"]
    quota, period = host.get("CpuQuota") or 0, host.get("CpuPeriod") or CPU_PERIOD
    running = bool(state.get("Running"))
    return ContainerInfo(
        id=attrs["Id"],
        labels=config.get("Labels") or {},
        image=config.get("Image") or "",
        state=state.get("Status", "unknown"),
        running=running,
        oom_killed=bool(state.get("OOMKilled")),
        exit_code=state.get("ExitCode"),
        uptime_s=_uptime(state.get("StartedAt")) if running else None,
        ports=_port_mappings(attrs, engine_host),
        ip=_container_ip(attrs),
        network=host.get("NetworkMode") != "none",
        cpus=quota / period if quota > 0 else None,
        memory_mb=(host.get("Memory") or 0) // (1024 * 1024) or None,
        user=config.get("User") or None,
        pid=state.get("Pid") or None,
    )


def _port_mappings(attrs: dict[str, Any], engine_host: str | None) -> tuple[PortMapping, ...]:
    mappings = []
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for key, bindings in sorted(ports.items()):
        port, _, protocol = key.partition("/")
        for binding in bindings or []:
            mappings.append(PortMapping(
                binding.get("HostIp") or "0.0.0.0", int(binding["HostPort"]), int(port),
                protocol or "tcp", engine_host,
            ))
    return tuple(mappings)


def _container_ip(attrs: dict[str, Any]) -> str | None:
    settings = attrs.get("NetworkSettings") or {}
    if settings.get("IPAddress"):
        return settings["IPAddress"]
    for network in (settings.get("Networks") or {}).values():
        if network.get("IPAddress"):
            return network["IPAddress"]
    return None


def _uptime(started_at: str | None) -> float | None:
    if not started_at:
        return None
    stamp = started_at.rstrip("Z")
    stamp = stamp[: stamp.index(".") + 7] if "." in stamp else stamp
    try:
        started = datetime.fromisoformat(stamp.split("+")[0])
    except ValueError:
        return None
    return max(0.0, (datetime.now(UTC).replace(tzinfo=None) - started).total_seconds())
