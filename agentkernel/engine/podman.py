"""The Podman backend: Podman's Docker-compatible API, and where it differs, its libpod API.

Podman 4.3 (Debian 12) differs in four ways that matter here: it serves no compatible
``update`` endpoint (live resize goes through ``/libpod/containers/{id}/update``), its
compatible create ignores ``HostConfig.Runtime`` (so does libpod's own create, up to Podman 5:
a runtime is a service's default, checked after create), an image name without
a registry lives under ``localhost/``, and its default seccomp profile lets a container create
user and mount namespaces (``unshare(CLONE_NEWUSER)``), which Docker's refuses. Sandboxes on
Podman get Podman's own profile with namespace creation refused as Docker does
(:func:`confined_profile`); the compatible API takes a profile by path on the engine's host, so
this needs a local Podman (for a remote one, SECURITY.md says what is missing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from ..cache import cache_dir, write_atomically
from ..errors import ConfigError, EngineError, SandboxError, SandboxNotFound, one_line
from . import service
from .base import ContainerGone, CreateAgain
from .discovery import Endpoint
from .docker import CPU_PERIOD, DockerEngine
from .service import peer_credentials, service_uid
from .transport import API_VERSION

log = logging.getLogger(__name__)

# clone(2) flags that create namespaces: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
# NEWPID, NEWNET (the mask Docker's default profile uses)
NAMESPACE_FLAGS = 0x7E020000
ENOSYS, EPERM = 38, 1
LIBPOD_NETWORKS = "4.0.0"  # the libpod API version its network endpoints take
HOST_RECORD = "podman-host"  # the part of /info a start needs, per service (engine/service.py)
# Launchers of OCI runtimes written by `agentkernel runtime setup` (agentkernel.runtimes)
RUNTIME_LAUNCHERS = Path("/usr/local/libexec/agentkernel/runtimes")
# Where a rootful Podman takes the ids of `UsernsMode: auto` from, for this user name
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
USERNS_USER = "containers"
# ids 0-65535 inside (nobody, 65534, too), all sandboxes on the first 65536 of that user's range
USERNS_SIZE = 65536
# What unpacks a tar archive from stdin into the folder given last, in a gVisor sandbox, in the
# order tried (an image may lack tar: a busybox image, a distroless one with only python3)
UNPACKERS = (
    ["tar", "-x", "-f", "-", "-C"],
    ["busybox", "tar", "-x", "-f", "-", "-C"],
    ["python3", "-c", "import sys, tarfile\n"
     "tarfile.open(fileobj=sys.stdin.buffer, mode='r|').extractall(sys.argv[1])"],
)


def confined_profile(default: dict[str, Any]) -> dict[str, Any]:
    """Podman's default seccomp profile with namespace creation refused: ``unshare`` and
    ``setns`` fail with EPERM, ``clone`` is allowed only without namespace flags, and
    ``clone3`` (whose flags seccomp cannot see) answers ENOSYS so the C library falls back
    to ``clone``."""
    profile = json.loads(json.dumps(default))
    gated = {"unshare", "setns", "clone", "clone3"}
    for rule in profile["syscalls"]:
        if rule.get("action") == "SCMP_ACT_ALLOW":
            rule["names"] = [name for name in rule["names"] if name not in gated]
    profile["syscalls"] = [rule for rule in profile["syscalls"] if rule["names"]]
    profile["syscalls"] += [
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        {"names": ["unshare", "setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
    ]
    return profile


def runtime_launcher(runtime: str, folder: Path = RUNTIME_LAUNCHERS) -> str:
    """What a Podman container of ``runtime`` runs: the launcher `agentkernel runtime setup`
    wrote for it (a path, as Podman names the runtime of a service started with
    ``--runtime PATH``), else the name as given."""
    launcher = folder / runtime
    if "/" not in runtime and os.access(launcher, os.X_OK):
        return str(launcher)
    return runtime


def _tmpfs_without_copy_up(request: dict[str, Any]) -> dict[str, Any]:
    """The create request with its tmpfs mounts as Podman's ``Tmpfs`` entries with
    ``notmpcopyup``: Podman fills a tmpfs mount with what lies beneath it by default, and
    an empty tmpfs over a folder must hide that folder (sandbox/workspace.py)."""
    host = request.get("HostConfig", {})
    tmpfs = [m for m in host.get("Mounts") or [] if m.get("Type") == "tmpfs"]
    if not tmpfs:
        return request
    entries = dict(host.get("Tmpfs") or {})
    for mount in tmpfs:
        options = mount.get("TmpfsOptions") or {}
        parts = ["ro" if mount.get("ReadOnly") else "rw", "notmpcopyup"]
        if options.get("SizeBytes"):
            parts.append(f"size={options['SizeBytes']}")
        if options.get("Mode") is not None:
            parts.append(f"mode={options['Mode']:o}")
        entries[mount["Target"]] = ",".join(parts)
    rest = [m for m in host["Mounts"] if m.get("Type") != "tmpfs"]
    host = {**host, "Tmpfs": entries, "Mounts": rest}
    return {**request, "HostConfig": host}


def userns_starts(files: tuple[Path, Path] = SUBID_FILES) -> tuple[int, int] | None:
    """The first uid and gid of the user ``containers``'s ranges in /etc/subuid and
    /etc/subgid that hold USERNS_SIZE ids; None when either file gives it fewer (Podman would
    refuse the create)."""
    starts = []
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return None
        ranges = [line.split(":")[1:] for line in lines
                  if line.split(":")[0] == USERNS_USER and line.count(":") == 2]
        found = [int(start) for start, count in ranges
                 if start.isdigit() and count.isdigit() and int(count) >= USERNS_SIZE]
        if not found:
            return None
        starts.append(found[0])
    return starts[0], starts[1]


def userns_mode(files: tuple[Path, Path] = SUBID_FILES) -> str | None:
    """The ``UsernsMode`` that gives a rootful Podman's sandboxes a user namespace: ids
    0-65535 inside on the first USERNS_SIZE ids of the user ``containers`` (userns_starts),
    the same for every sandbox, as Docker's userns-remap does (Podman keeps one copy of an
    image's files per distinct mapping: one range, one copy). None when there are none."""
    starts = userns_starts(files)
    if starts is None:
        return None
    return (f"auto:uidmapping=0:{starts[0]}:{USERNS_SIZE},"
            f"gidmapping=0:{starts[1]}:{USERNS_SIZE}")


def others_may_use(path: str, write: bool = False,
                   shift: tuple[int, int, int] | None = None) -> bool:
    """Whether a process that is "others" to the host's files (a user namespace's root) can
    reach ``path`` (every folder above it searchable by others) and read it (and write it,
    with ``write``); a folder must be searchable too. With the namespace's ids (``shift``:
    uid and gid of root inside, count), what is owned by its ids is its root's to use."""
    def usable(info: os.stat_result, need: int) -> bool:
        if shift is not None and all(start <= owner < start + shift[2] for start, owner in
                                     ((shift[0], info.st_uid), (shift[1], info.st_gid))):
            return True
        return info.st_mode & need == need

    try:
        target = Path(path)
        for folder in reversed(target.parents):
            if not usable(folder.stat(), stat.S_IXOTH):
                return False
        info = target.stat()
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IWOTH if write else 0)
    need |= stat.S_IXOTH if stat.S_ISDIR(info.st_mode) else 0
    return usable(info, need)


def _well_formed(host: Any) -> bool:
    """Whether a recorded /info host part has all a start needs, in the shapes it needs."""
    try:
        source = host["security"]["seccompProfilePath"]
        return (isinstance(host["cpus"], int) and isinstance(host["memTotal"], int)
                and isinstance(source, str) and source.startswith("/")
                and "\n" not in source and "\x00" not in source)
    except (KeyError, TypeError):
        return False


def recorded_host(base_url: str, server: str | None) -> dict[str, Any] | None:
    """What /info said about its host (CPUs, memory, default seccomp profile's path) to an
    earlier process, if the same Podman process (``service.service_identity``) still serves
    ``base_url``: a running service does not read its configuration again."""
    known, host = service.recorded(HOST_RECORD, base_url, server)
    return host if known and _well_formed(host) else None


def recorded_source(base_url: str) -> str | None:
    """The path of Podman's default seccomp profile that /info gave for ``base_url`` last,
    whichever Podman process gave it (a start checks it against /info)."""
    record = service.read_record(HOST_RECORD, base_url)
    host = record[1] if record else None
    return host["security"]["seccompProfilePath"] if _well_formed(host) else None


def record_host(base_url: str, server: str | None, host: dict[str, Any]) -> None:
    """Record the part of /info's ``host`` a start needs, with the ``server`` that gave it
    (best effort; only an answer that has all of it)."""
    try:
        kept = {"cpus": host["cpus"], "memTotal": host["memTotal"],
                "security": {"seccompProfilePath": host["security"]["seccompProfilePath"]}}
    except (KeyError, TypeError):
        return
    service.record(HOST_RECORD, base_url, server, kept)


class PodmanEngine(DockerEngine):
    """Podman through its compatible API, with its own endpoints where that falls short."""

    kind = "podman"

    def __init__(self, endpoint: Endpoint | str, client: Any) -> None:
        super().__init__(endpoint, client)
        self._host_lock = threading.Lock()
        self._host_answer: dict[str, Any] | None = None
        self._profiles: dict[str, str] = {}  # default profile's path -> confined profile's
        self._unconfirmed: dict[str, str] = {}  # container -> recorded default path it got
        self._warned: set[str] = set()
        self._launched: dict[str, bool] = {}  # container -> under a runtime launcher

    def _host(self) -> dict[str, Any]:
        """The "host" part of libpod's /info, asked once (it takes 0.2-0.35 s, and CPU the
        container's start needs): the host's size and the seccomp profile's path both come
        from it, during a start at the same time, and the second asker waits for the first
        one's answer. Not asked at all when the same Podman process answered it to an
        earlier process (``recorded_host``)."""
        with self._host_lock:
            known = self._host_if_known()
            if known is None:
                info = self._libpod("get", "/info", "asking podman about its host")
                known = self._host_answer = info.get("host") or {}
                record_host(self.base_url, self._service, known)
            return known

    def _host_if_known(self) -> dict[str, Any] | None:
        """/info's host part without asking: answered already, or on record for the Podman
        process that serves this socket now."""
        if self._host_answer is None:
            self._host_answer = recorded_host(self.base_url, self._service)
        return self._host_answer

    @property
    def ncpu(self) -> int:
        return int(self._host().get("cpus") or os.cpu_count() or 1)

    @property
    def mem_total_mb(self) -> int:
        return int(self._host().get("memTotal") or 0) // (1024 * 1024)

    def _joins_after_start(self, host: Mapping[str, Any]) -> str | None:
        """Joined at the start: Podman's start on the guarded network takes 35 ms more than
        without one (0.10 s against 0.07 s here), not worth a second request."""
        return None

    def create_container(self, request: dict[str, Any], name: str) -> str:
        """Create with the confined seccomp profile, when this Podman can be given one."""
        source, confirmed = self._profile_source()
        profile = self._confined_profile_file(source, warn=confirmed)
        if profile is None and not confirmed:  # the recorded file is unusable: ask /info
            source, confirmed = self._reported_source(), True
            profile = self._confined_profile_file(source)
        request = _tmpfs_without_copy_up(request)
        host = request.get("HostConfig", {})
        if profile and not any(o.startswith("seccomp=") for o in host.get("SecurityOpt", [])):
            host = {**host, "SecurityOpt": [*host.get("SecurityOpt", []), f"seccomp={profile}"]}
            request = {**request, "HostConfig": host}
        if (self.id_shift(host.get("Runtime")) and "UsernsMode" not in host
                and self._host_files_allow_userns(host, name)):
            request = {**request, "HostConfig": {**host, "UsernsMode": self._userns}}
        container_id = super().create_container(request, name)
        if profile and not confirmed and source:
            self._unconfirmed[container_id] = source
        return container_id

    @cached_property
    def _userns(self) -> str | None:
        """The user namespace sandboxes get (root inside is an unprivileged uid outside): for
        a local Podman run by root (SO_PEERCRED), with ids for it in /etc/subuid and
        /etc/subgid (user ``containers``, see SECURITY.md); else None."""
        return userns_mode() if self._service_uid == 0 else None

    def id_shift(self, runtime: str | None = None) -> tuple[int, int, int] | None:
        """The host ids of sandboxes' root (``_userns``'s range); None under a runtime with its
        own kernel (one agentkernel set up a launcher for: gVisor), whose kernel is the
        boundary there: Debian 12's runsc (2022) cannot start a sandbox in a user namespace
        with a named volume mounted ("cannot read client sync file: ... EOF")."""
        launched = (runtime_launcher(runtime) != runtime if runtime is not None
                    else self._service_runtime_launched)
        starts = userns_starts() if self._userns and not launched else None
        return None if starts is None else (*starts, USERNS_SIZE)

    def _host_files_allow_userns(self, host: dict[str, Any], name: str) -> bool:
        """Whether the host folders the container mounts still work from a user namespace,
        whose root is "others" to the host's files: every bind's source reachable and
        readable by others (writable too for a writable bind) unless it is the namespace's
        own (the overlay of a workspace shifted into it, sandbox/shifted.py), and no volume
        with driver options (an overlay of the host's files the engine mounts). Else the
        container keeps the host's root, as without user namespaces (logged)."""
        mounts = [(bind.split(":")[0], not bind.endswith(":ro")) for bind in
                  host.get("Binds") or [] if bind.startswith("/")]
        volumes = []
        for mount in host.get("Mounts") or []:
            if mount.get("Type") == "bind":
                mounts.append((mount["Source"], not mount.get("ReadOnly")))
            elif mount.get("Type") == "volume":
                volumes.append(mount["Source"])
        ids = self.id_shift(host.get("Runtime"))
        blocked = [path for path, write in mounts if not others_may_use(path, write, ids)]
        for volume in volumes:  # one this process was just told of is not asked again
            seen = self._volumes_seen.get(volume)
            if seen is None:
                with contextlib.suppress(SandboxError):
                    seen = self.volume(volume)
            if seen is not None and seen.options:
                blocked.append(f"volume {volume}")
        if blocked:
            log.info("%s: no user namespace of its own (root inside is the host's root): "
                     "%s not usable by others on the host", name, ", ".join(blocked[:3]))
        return not blocked

    @cached_property
    def _service_runtime_launched(self) -> bool:
        """Whether this (local) Podman service's default runtime is one of agentkernel's
        runtime launchers (a service started with ``--runtime LAUNCHER``, as for gVisor): its
        command line, read through SO_PEERCRED's pid."""
        peer = peer_credentials(self.base_url)
        try:
            argv = Path(f"/proc/{peer[0]}/cmdline").read_bytes().split(b"\0") if peer else []
        except OSError:
            return False
        launchers = f"{RUNTIME_LAUNCHERS}/".encode()
        chosen = [argv[index + 1] for index in range(len(argv) - 1) if argv[index] == b"--runtime"]
        chosen += [arg.split(b"=", 1)[1] for arg in argv if arg.startswith(b"--runtime=")]
        return any(value.startswith(launchers) for value in chosen)

    @cached_property
    def _service_uid(self) -> int | None:
        return service_uid(self.base_url)

    def start_container(self, container_id: str) -> None:
        """Start; a container created on the recorded path of Podman's default profile is
        checked against /info's answer (asked beside the create, for the host's size) once
        started, before anything of the caller's runs in it: CreateAgain if Podman says
        another path now."""
        super().start_container(container_id)
        assumed = self._unconfirmed.pop(container_id, None)
        if assumed is None:
            return
        actual = self._reported_source()
        if actual != assumed:
            said = f"is now {actual}" if actual else "was not given by podman's /info"
            raise CreateAgain(f"podman's default seccomp profile {said}, not {assumed} as "
                              "recorded: the sandbox is created again")

    def _profile_source(self) -> tuple[str | None, bool]:
        """The path of Podman's default seccomp profile, and whether /info said it: /info's
        answer once it came; before that, the path an earlier process recorded for this
        endpoint (/info takes 0.2-0.35 s, so a start does not wait for it; start_container
        checks); with neither, /info's, waited for. None for a Podman reached over the network
        (it reads profiles from its own host) or one that does not say."""
        if not self.base_url.startswith("unix://"):
            self._warn_once(f"podman at {self.base_url}: sandboxes keep podman's default "
                            "seccomp profile (namespace creation allowed): the engine is not "
                            "local")
            return None, True
        if self._host_if_known() is None:
            recorded = recorded_source(self.base_url)
            if recorded is not None and os.path.isfile(recorded):
                return recorded, False
        return self._reported_source(), True

    def _reported_source(self) -> str | None:
        """/info's path of Podman's default seccomp profile (recorded for the next process
        with the rest of /info's answer, see _host); None when Podman does not say."""
        try:
            return str(self._host()["security"]["seccompProfilePath"])
        except (KeyError, TypeError, EngineError) as err:
            self._warn_once("podman: sandboxes keep podman's default seccomp profile "
                            f"(namespace creation allowed): {one_line(err, 200)}")
            return None

    def _confined_profile_file(self, source: str | None, warn: bool = True) -> str | None:
        """The confined profile made from the default profile at ``source`` (written once per
        content, named by its digest), or None when that cannot be read (said in the log
        with ``warn``: sandboxes then keep Podman's default)."""
        if source is None:
            return None
        if source not in self._profiles:
            try:
                profile = confined_profile(json.loads(Path(source).read_text()))
            except (OSError, KeyError, TypeError, ValueError) as err:
                if warn:
                    self._warn_once("podman: sandboxes keep podman's default seccomp profile "
                                    f"(namespace creation allowed): {one_line(err, 200)}")
                return None
            text = json.dumps(profile, sort_keys=True)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            path = cache_dir() / f"podman-seccomp-{digest}.json"
            if not path.exists():
                write_atomically(path, text)
            self._profiles[source] = str(path)
        return self._profiles[source]

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def update_limits(self, container_id: str, cpus: float, memory_mb: int) -> None:
        try:
            super().update_limits(container_id, cpus, memory_mb)
            return
        except ContainerGone:
            if self.inspect_container(container_id) is None:
                raise
        quota, memory = int(cpus * CPU_PERIOD), memory_mb * 1024 * 1024
        body = {"cpu": {"quota": quota, "period": CPU_PERIOD},
                "memory": {"limit": memory, "swap": memory}}
        self._libpod("post", f"/containers/{container_id}/update", "resizing the sandbox",
                     json=body)

    def create_network(self, name: str, bridge: str, labels: Mapping[str, str]) -> None:
        """Through libpod: the compatible API ignores the interface name. No DNS server of
        Podman's on the bridge (containers use the host's resolvers), and no per-network
        switch against traffic between its containers: the guarded network's firewall rules
        refuse it (``agentkernel.netguard``)."""
        body = {"name": name, "driver": "bridge", "network_interface": bridge,
                "dns_enabled": False, "labels": dict(labels)}
        self._libpod("post", "/networks/create", f"creating network {name}", LIBPOD_NETWORKS,
                     json=body)

    def network_bridge(self, name: str) -> str | None:
        try:
            network = self._libpod("get", f"/networks/{name}/json", f"inspecting network {name}",
                                   LIBPOD_NETWORKS)
        except ContainerGone:  # 404
            return None
        return network.get("network_interface") or None

    def killed_out_of_memory(self, container_id: str, whole: bool = False,
                             within: float = 86400.0) -> bool:
        """Podman records no out-of-memory event of a container the host's OOM killer ended
        as a whole (gVisor's sandbox): with ``whole``, its death by SIGKILL (137) is read as
        one, unless the engine was asked to kill it (its ``kill`` event). Its libpod events,
        as its compatible ones answer nothing with ``until``."""
        if not whole:
            return False
        since = int(time.time() - within)
        filters = json.dumps({"container": [container_id], "event": ["died", "kill"]})
        url = f"{self.api.base_url}/v{API_VERSION}/libpod/events"
        with self._errors("reading podman's events"):
            answer = self.api.get(url, params={"stream": "false", "since": since,
                                               "filters": filters}, timeout=10)
        if not answer.ok:
            return False
        sigkilled = False
        for line in answer.text.splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                event = json.loads(line)
                if event.get("Action") == "kill":
                    return False
                attributes = event.get("Actor", {}).get("Attributes", {})
                sigkilled = sigkilled or attributes.get("containerExitCode") == "137"
        return sigkilled

    # -- files in and out of a gVisor sandbox ------------------------------------------------
    def put_archive(self, container_id: str, folder: str, archive: bytes) -> bool:
        """Podman copies into a running container by entering its mount namespace, which under
        a runtime with its own kernel (gVisor) is not the container's file system: there the
        container's own ``tar`` unpacks it, as root, through an exec; in an image without one,
        its busybox's or its python3's (whose tarfile needs nothing else)."""
        if not self._own_kernel(container_id):
            return super().put_archive(container_id, folder, archive)
        for unpacker in UNPACKERS:
            outcome = self._unpack_inside(container_id, [*unpacker, folder], archive)
            if outcome is None:  # not in the image
                continue
            code, errors = outcome
            if code == 0:
                return True
            if "no such file" in errors.lower() or "not a directory" in errors.lower():
                return False
            raise EngineError(f"writing into {folder} failed: {unpacker[0]} exited with {code}: "
                              f"{one_line(errors, 200)}")
        raise EngineError(f"writing into {folder} failed: the image has none of tar, busybox "
                          "and python3, one of which a gVisor sandbox on Podman needs to "
                          "receive files")

    def _unpack_inside(self, container_id: str, argv: list[str],
                       archive: bytes) -> tuple[int | None, str] | None:
        """Run ``argv`` in the container as root with ``archive`` on its stdin: its exit code
        and the end of its stderr; None when the image has no such program (it could not be
        run: 126 or 127, or it was gone before reading its input)."""
        stream = self.open_exec(container_id, argv, user="0")
        try:
            try:
                stream.write(archive)
                stream.close_stdin()
            except (BrokenPipeError, ConnectionResetError):
                pass
            while stream.read():
                pass
            code, errors = self._exit_code(stream), stream.stderr_tail()
        finally:
            stream.close()
        if code in (126, 127) or (code is None and not errors):
            return None
        return code, errors

    def get_archive(self, container_id: str, path: str) -> Iterator[bytes]:
        """As put_archive: under gVisor the container's own ``tar`` writes the archive."""
        if not self._own_kernel(container_id):
            return super().get_archive(container_id, path)
        parent, _, name = path.rstrip("/").rpartition("/")
        script = ('[ -e "$1" ] || [ -L "$1" ] || { echo "$1: No such file" >&2; exit 2; }; '
                  'exec tar -c -f - -C "$2" "$3"')
        stream = self.open_exec(container_id, ["/bin/sh", "-c", script, "sh", path,
                                               parent or "/", name or "."], user="0")
        first = stream.read()
        if not first:
            errors, code = stream.stderr_tail(), self._exit_code(stream)
            stream.close()
            if "no such file" in errors.lower() or "cannot stat" in errors.lower():
                raise SandboxNotFound(f"No such file in the sandbox: {path}")
            raise EngineError(f"reading {path} failed: tar exited with {code}: "
                              f"{one_line(errors, 200)}")
        return self._rest_of(stream, first)

    @staticmethod
    def _rest_of(stream: Any, first: bytes) -> Iterator[bytes]:
        try:
            chunk = first
            while chunk:
                yield chunk
                chunk = stream.read()
        finally:
            stream.close()

    @staticmethod
    def _exit_code(stream: Any) -> int | None:
        """The exec's exit code, once Podman has recorded it (a moment after its end)."""
        for _ in range(50):
            code = stream.exit_code()
            if code is not None:
                return int(code)
            time.sleep(0.05)
        return None

    def _own_kernel(self, container_id: str) -> bool:
        """Whether the container runs under one of agentkernel's runtime launchers (gVisor):
        asked once per container."""
        if container_id not in self._launched:
            try:
                info = self._libpod("get", f"/containers/{container_id}/json",
                                    "checking the sandbox's runtime")
            except ContainerGone:
                return False
            runtime = str(info.get("OCIRuntime") or "")
            self._launched[container_id] = runtime.startswith(f"{RUNTIME_LAUNCHERS}/")
        return self._launched[container_id]

    def check_runtime(self, container_id: str, runtime: str | None) -> None:
        """Refuse a container created with another OCI runtime than the one asked for: the
        compatible API ignores the option, so a sandbox meant for gVisor or Kata would
        silently run under the default runtime."""
        if runtime is None:
            return
        info = self._libpod("get", f"/containers/{container_id}/json",
                            "checking the sandbox's runtime")
        actual = info.get("OCIRuntime")
        if actual not in (runtime, runtime_launcher(runtime)):
            raise ConfigError(
                f"runtime {runtime!r} not applied: podman created the container with "
                f"{actual!r} (podman's API ignores the runtime option: serve these sandboxes "
                f"from a podman service whose default runtime is {runtime!r}, see `agentkernel "
                f"runtime setup {runtime}`, or use Docker)"
            )

    def _libpod(self, method: str, path: str, action: str, version: str = API_VERSION,
                **kwargs: Any) -> dict[str, Any]:
        """Call one of Podman's own endpoints (``/libpod/...``) as API ``version`` (its
        network endpoints refuse Docker's version numbers); its JSON answer, or {}."""
        url = f"{self.api.base_url}/v{version}/libpod{path}"
        with self._errors(action):
            answer = self.api.request(method, url, timeout=self.api.timeout, **kwargs)
        if answer.status_code == 404:
            raise ContainerGone(f"{action}: {one_line(answer.text)}")
        if not answer.ok:
            raise EngineError(f"{action} failed: {answer.status_code} {one_line(answer.text)}")
        json_answer = answer.headers.get("Content-Type", "").startswith("application/json")
        return answer.json() if json_answer and answer.content else {}

    def _local_repo(self, repo: str) -> str:
        """A registry-less name goes under ``localhost/``, as Podman stores it."""
        first = repo.split("/", 1)[0]
        has_registry = "/" in repo and ("." in first or ":" in first or first == "localhost")
        return repo if has_registry else f"localhost/{repo}"
