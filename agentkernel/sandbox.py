"""Sandbox: one managed container. Lifecycle, exec, files, resize, ports, reconnect.

Nothing here knows Jupyter. Every engine failure comes out as one of our SandboxError
subclasses with a one-line message.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import posixpath
import secrets
import shutil
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests
from docker.errors import APIError, DockerException, NotFound

from . import paths, specs, tarball
from .config import EffectiveConfig, SandboxConfig
from .engine import Engine, connect
from .errors import (
    ConfigError,
    EngineUnavailable,
    ExecTimeout,
    SandboxConflict,
    SandboxError,
    SandboxNotFound,
    SandboxNotRunning,
)
from .execstream import STDERR, STDOUT, ExecStream, raw_socket
from .images import ProgressCallback, ensure_image

log = logging.getLogger("agentkernel")

LABEL = "agentkernel.sandbox"
LABEL_OWNER = "agentkernel.owner"
LABEL_PERSISTENT = "agentkernel.persistent"
LABEL_PROFILE = "agentkernel.profile"
CPU_PERIOD = 100_000
TMPFS_MAX_MB = 256
# The container's main process: wait on stdin, exit at EOF (the lifeline, see ARCHITECTURE.md).
HOLD_COMMAND = ["/bin/sh", "-c", "while read -r _; do :; done; exit 0"]
OutputCallback = Callable[[str], None]


@dataclass
class ExecResult:
    """What a finished command returned."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class SandboxStatus:
    """A snapshot of a sandbox as the engine reports it."""

    name: str
    running: bool
    state: str
    image: str
    engine: str
    profile: str
    cpus: float | None
    memory_mb: int | None
    network: bool
    ports: list[specs.PortMapping] = field(default_factory=list)
    uptime_s: float | None = None
    ip: str | None = None
    persistent: bool = False
    container_id: str = ""

    def __str__(self) -> str:
        limits = (
            f"cpus {self.cpus:g}" if self.cpus else "cpus unlimited",
            f"memory {self.memory_mb} MB" if self.memory_mb else "memory unlimited",
        )
        lines = [
            f"sandbox {self.name}: {self.state} ({self.engine}, profile {self.profile}"
            f"{', persistent' if self.persistent else ''})",
            f"  image   {self.image}",
            f"  limits  {', '.join(limits)}",
            f"  network {'on' if self.network else 'off'}" + (f", ip {self.ip}" if self.ip else ""),
        ]
        if self.uptime_s is not None:
            lines.append(f"  uptime  {self.uptime_s:.0f} s")
        lines += [f"  port    {p}" for p in self.ports]
        return "\n".join(lines)


def _first_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text[:300]


def _force_remove(api: Any, container_id: str, lifeline: socket.socket | None) -> None:
    """Finalizer: remove an ephemeral container even if the owner forgot to stop it."""
    with contextlib.suppress(Exception):
        api.remove_container(container_id, force=True)
    if lifeline is not None:
        with contextlib.suppress(Exception):
            lifeline.close()


class Sandbox:
    """A managed container. ``with Sandbox(image=...) as sb: sb.exec("echo hi")``."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        engine: Engine | None = None,
        **overrides: Any,
    ):
        if config is None:
            config = SandboxConfig(**overrides)
        elif overrides:
            config = config.copy(**overrides)
        self.config = config
        self.effective: EffectiveConfig = config.resolve()
        self._engine = engine
        self._container_id: str | None = None
        self._lifeline: socket.socket | None = None
        self._finalizer: weakref.finalize | None = None

    # -- identity ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.effective.name

    @property
    def container_name(self) -> str:
        return self.effective.container_name

    @property
    def container_id(self) -> str:
        if self._container_id is None:
            raise SandboxNotRunning(f"sandbox {self.name} is not started (call start())")
        return self._container_id

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = connect()
        return self._engine

    def __repr__(self) -> str:
        return f"<Sandbox {self.name} image={self.effective.image!r}>"

    # -- errors --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _engine_errors(self, action: str) -> Iterator[None]:
        """Translate engine failures during ``action`` into our one-line errors."""
        try:
            yield
        except SandboxError:
            raise
        except NotFound as err:
            raise SandboxNotRunning(
                f"sandbox {self.name} is gone while {action}: {self.death_reason() or 'removed'}"
            ) from err
        except APIError as err:
            text = _first_line(err.explanation or str(err))
            if err.status_code == 409 and "not running" in text.lower():
                reason = self.death_reason() or "stopped"
                raise SandboxNotRunning(f"sandbox {self.name} is not running: {reason}") from None
            raise SandboxError(f"{action} failed: {text}") from None
        except (requests.ConnectionError, ConnectionError, DockerException) as err:
            raise EngineUnavailable(
                f"the container engine at {self.engine.base_url} stopped answering while "
                f"{action} ({_first_line(str(err))[:120]})"
            ) from None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, progress: ProgressCallback | None = None) -> Sandbox:
        """Create and start the container (pulling the image if needed). Returns self."""
        eff = self.effective
        self._check_limits(eff.cpus, eff.memory_mb)
        api = self.engine.api
        with self._engine_errors(f"checking image {eff.image}"):
            ensure_image(self.engine, eff.image, progress)
        self._refuse_taken_name()
        with self._engine_errors(f"creating sandbox {self.name}"):
            created = api.create_container(**self._create_kwargs(eff))
        self._container_id = created["Id"]
        try:
            with self._engine_errors(f"starting sandbox {self.name}"):
                self._check_runtime(eff.runtime)
                if not eff.persistent:
                    self._lifeline = raw_socket(
                        api.attach_socket(self._container_id, params={"stdin": 1, "stream": 1})
                    )
                api.start(self._container_id)
        except SandboxError:
            self._discard()
            raise
        if not eff.persistent:
            self._finalizer = weakref.finalize(
                self, _force_remove, api, self._container_id, self._lifeline
            )
        log.info("sandbox %s started (%s)", self.name, self._container_id[:12])
        return self

    def _check_runtime(self, runtime: str | None) -> None:
        """Refuse a container created with another OCI runtime than the one asked for.

        Podman's Docker-compatible API ignores HostConfig.Runtime: without this check a sandbox
        meant for gVisor or Kata would silently run under the default runtime.
        """
        if runtime is None or self.engine.kind != "podman":
            return  # Docker refuses an unknown runtime at create
        api = self.engine.api
        info = api._result(api._get(api._url("/libpod/containers/{0}/json", self.container_id)),
                           json=True)
        actual = info.get("OCIRuntime")
        if actual != runtime:
            raise ConfigError(
                f"runtime {runtime!r} not applied: podman created the container with "
                f"{actual!r} (its Docker-compatible API ignores the runtime option; make "
                f"{runtime!r} podman's default runtime in containers.conf, or use Docker)"
            )

    def _refuse_taken_name(self) -> None:
        try:
            existing = self.engine.api.inspect_container(self.container_name)
        except NotFound:
            return
        except (APIError, requests.ConnectionError):
            return
        state = existing.get("State", {}).get("Status", "present")
        raise SandboxConflict(
            f"a sandbox named {self.name!r} already exists ({state}): connect to it "
            f"(%sandbox connect {self.name}) or choose another --name"
        )

    def _check_limits(self, cpus: float | None, memory_mb: int | None) -> None:
        if cpus is not None and cpus > self.engine.ncpu:
            raise ConfigError(
                f"invalid cpus {cpus:g}: the engine's host has {self.engine.ncpu} CPUs "
                f"(accepted: more than 0, at most {self.engine.ncpu})"
            )
        total = self.engine.mem_total_mb
        if memory_mb is not None and total and memory_mb > total:
            raise ConfigError(
                f"invalid memory {memory_mb} MB: the engine's host has {total} MB "
                f"(accepted: 6 to {total})"
            )

    def _create_kwargs(self, eff: EffectiveConfig) -> dict[str, Any]:
        api = self.engine.api
        host = dict(
            auto_remove=not eff.persistent,
            network_mode=None if eff.network else "none",
            read_only=eff.read_only,
            init=True,
            port_bindings={
                f"{p.container_port}/{p.protocol}": (p.host_ip, p.host_port)
                if p.host_port
                else (p.host_ip,)
                for p in eff.ports
            }
            or None,
            binds={v.source: {"bind": v.target, "mode": "ro" if v.read_only else "rw"}
                   for v in eff.binds}
            or None,
            tmpfs={path: f"rw,nosuid,nodev,size={tmpfs_mb(eff.memory_mb)}m"
                   for path in eff.tmpfs} or None,
            pids_limit=eff.pids_limit,
            runtime=eff.runtime,
        )
        if eff.memory_mb:
            host.update(mem_limit=f"{eff.memory_mb}m", memswap_limit=f"{eff.memory_mb}m")
        if eff.cpus:
            host.update(cpu_period=CPU_PERIOD, cpu_quota=int(eff.cpus * CPU_PERIOD))
        if eff.profile.cap_add is not None:
            host.update(cap_drop=["ALL"], cap_add=list(eff.profile.cap_add) or None)
        if eff.profile.no_new_privileges:
            host.update(security_opt=["no-new-privileges"])
        labels = {
            LABEL: eff.name,
            LABEL_OWNER: f"{socket.gethostname()}:{os.getpid()}",
            LABEL_PERSISTENT: "true" if eff.persistent else "false",
            LABEL_PROFILE: eff.profile.name,
            **eff.labels,
        }
        return dict(
            image=eff.image,
            name=eff.container_name,
            entrypoint=HOLD_COMMAND,
            command=[],
            detach=eff.persistent,  # not detached -> StdinOnce: stdin EOF ends the container
            stdin_open=True,
            labels=labels,
            environment=eff.env or None,
            working_dir=eff.workdir,
            user=eff.user,
            ports=[(p.container_port, p.protocol) for p in eff.ports] or None,
            host_config=api.create_host_config(
                **{k: v for k, v in host.items() if v is not None}
            ),
        )

    def _discard(self) -> None:
        """Remove a container that failed to come up."""
        if self._container_id:
            with contextlib.suppress(Exception):
                self.engine.api.remove_container(self._container_id, force=True)
        self.detach()

    def stop(self) -> None:
        """Stop the sandbox; its container is removed unless it is persistent."""
        if self._container_id is None:
            return
        api = self.engine.api
        try:
            if self.effective.persistent:
                api.stop(self._container_id, timeout=2)
            else:
                api.remove_container(self._container_id, force=True)
        except NotFound:
            pass
        except (APIError, requests.ConnectionError) as err:
            log.warning("stopping sandbox %s: %s", self.name, _first_line(str(err)))
        finally:
            self.detach()

    def lifeline_fd(self) -> int:
        """The fd of the stdin socket that keeps an ephemeral container alive."""
        if self._lifeline is None:
            raise SandboxError(f"sandbox {self.name} has no lifeline (persistent or not started)")
        return self._lifeline.fileno()

    def detach(self) -> None:
        """Let go of the container without removing it: drop the finalizer, close this
        process's lifeline (another process may hold it now) and forget the id."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        self._container_id = None

    def config_values(self) -> dict[str, Any]:
        """The configuration's explicit values, to rebuild an equal SandboxConfig elsewhere."""
        values = {k: getattr(self.config, k) for k in self.config.class_trait_names(config=True)}
        return {**values, "name": self.name}

    @classmethod
    def adopt(cls, engine: Engine, container_id: str, lifeline_fd: int,
              config_values: dict[str, Any]) -> Sandbox:
        """A sandbox started by another process, whose lifeline socket this one inherited."""
        sandbox = cls(SandboxConfig(**config_values), engine=engine)
        sandbox._container_id = container_id
        sandbox._lifeline = socket.socket(fileno=lifeline_fd)
        sandbox._finalizer = weakref.finalize(
            sandbox, _force_remove, engine.api, container_id, sandbox._lifeline
        )
        return sandbox

    def remove(self) -> None:
        """Remove the container, persistent or not, even after stop()."""
        with contextlib.suppress(NotFound, APIError, requests.ConnectionError):
            self.engine.api.remove_container(self._container_id or self.container_name, force=True)
        self.stop()

    def __enter__(self) -> Sandbox:
        if self._container_id is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _inspect(self) -> dict[str, Any] | None:
        try:
            return self.engine.api.inspect_container(self.container_id)
        except NotFound:
            return None
        except APIError as err:  # Podman answers 500 while it removes the container
            if "no such container" in (err.explanation or str(err)).lower():
                return None
            raise

    @property
    def is_running(self) -> bool:
        """Asked of the engine, not remembered."""
        if self._container_id is None:
            return False
        try:
            attrs = self._inspect()
        except (APIError, requests.ConnectionError, DockerException):
            return False
        return bool(attrs and attrs["State"].get("Running"))

    def death_reason(self) -> str | None:
        """Why the container is not running (None if it runs or was never started)."""
        if self._container_id is None:
            return None
        try:
            attrs = self._inspect()
        except (APIError, requests.ConnectionError, DockerException):
            return "the container engine is not answering"
        if attrs is None:
            return "its container was removed (killed or stopped outside agentkernel)"
        state = attrs["State"]
        if state.get("Running"):
            return None
        if state.get("OOMKilled"):
            return f"out of memory (limit {self.effective.memory_mb} MB)"
        code = state.get("ExitCode")
        return "killed (SIGKILL)" if code == 137 else f"its container exited with code {code}"

    # -- exec ----------------------------------------------------------------------------
    def open_exec(
        self,
        cmd: Sequence[str],
        *,
        workdir: str | None = None,
        user: str | None = None,
        env: dict[str, str] | None = None,
        stdin: bool = True,
    ) -> ExecStream:
        """Start ``cmd`` with a raw two-way stream (used by the runner session)."""
        with self._engine_errors(f"starting {list(cmd)[:3]} in sandbox {self.name}"):
            return ExecStream(
                self.engine.api, self.container_id, list(cmd), workdir=workdir,
                user=user or self.effective.user, env=env, stdin=stdin,
            )

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        workdir: str | None = None,
        user: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> ExecResult:
        """Run ``cmd`` (a shell string or an argv list) and wait for it.

        With ``on_stdout`` / ``on_stderr`` the output is streamed to the callbacks as it is
        produced (and not kept in the result). A timeout kills the command and raises
        ExecTimeout.
        """
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if not argv:
            raise ConfigError("exec needs a command: got an empty one")
        marker = secrets.token_hex(8)
        env = {**(env or {}), "AGENTKERNEL_EXEC": marker}
        stream = self.open_exec(argv, workdir=workdir, user=user, env=env, stdin=stdin is not None)
        timer = None
        timed_out = threading.Event()
        if timeout is not None:
            timer = threading.Timer(timeout, self._kill_exec, (marker, stream, timed_out))
            timer.daemon = True
            timer.start()
        if stdin is not None:
            data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
            threading.Thread(target=self._feed, args=(stream, data), daemon=True).start()
        try:
            out, err = self._collect(stream, on_stdout, on_stderr)
            code = self._exit_code(stream)
        finally:
            if timer is not None:
                timer.cancel()
            stream.close()
        if timed_out.is_set():
            exc = ExecTimeout(f"command {_first_line(str(cmd))[:80]!r} timed out after "
                              f"{timeout:g} s and was killed")
            exc.result = ExecResult(code if code is not None else -9, out, err)  # type: ignore
            raise exc
        if code is None:
            reason = self.death_reason()
            if reason:
                raise SandboxNotRunning(f"sandbox {self.name} stopped during exec: {reason}")
            code = -1
        return ExecResult(code, out, err)

    @staticmethod
    def _feed(stream: ExecStream, data: bytes) -> None:
        try:
            for start in range(0, len(data), 1 << 20):
                stream.write(data[start : start + (1 << 20)])
        except OSError:
            pass
        stream.close_stdin()

    @staticmethod
    def _collect(
        stream: ExecStream, on_stdout: OutputCallback | None, on_stderr: OutputCallback | None
    ) -> tuple[str, str]:
        decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in (STDOUT, STDERR)}
        sinks = {STDOUT: on_stdout, STDERR: on_stderr}
        kept: dict[int, list[str]] = {STDOUT: [], STDERR: []}
        while (frame := stream.read_frame()) is not None:
            which, payload = frame
            if which not in decoders:
                continue
            text = decoders[which].decode(payload)
            if text:
                sink = sinks[which]
                sink(text) if sink else kept[which].append(text)
        for which, decoder in decoders.items():
            tail = decoder.decode(b"", final=True)
            if tail:
                sink = sinks[which]
                sink(tail) if sink else kept[which].append(tail)
        return "".join(kept[STDOUT]), "".join(kept[STDERR])

    @staticmethod
    def _exit_code(stream: ExecStream) -> int | None:
        for _ in range(50):
            try:
                code = stream.exit_code()
            except (APIError, requests.ConnectionError):
                return None
            if code is not None:
                return code
            time.sleep(0.02)
        return None

    def _kill_exec(self, marker: str, stream: ExecStream, flag: threading.Event) -> None:
        """Kill every process of one exec (found by its marker variable), then its stream."""
        flag.set()
        script = (
            'for d in /proc/[0-9]*; do '
            f'if tr "\\0" "\\n" < "$d/environ" 2>/dev/null | grep -qx "AGENTKERNEL_EXEC={marker}";'
            ' then kill -9 "${d#/proc/}" 2>/dev/null; fi; done'
        )
        with contextlib.suppress(Exception):
            killer = ExecStream(self.engine.api, self.container_id, ["/bin/sh", "-c", script],
                                user="0", stdin=False)
            while killer.read_frame() is not None:
                pass
            killer.close()
        time.sleep(0.5)
        stream.close()

    # -- files ---------------------------------------------------------------------------
    def _owner(self) -> tuple[int, int]:
        user = self.effective.user or "0"
        uid, _, gid = user.partition(":")
        if uid.isdigit():
            return int(uid), int(gid) if gid.isdigit() else int(uid)
        return 0, 0

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` in the sandbox, creating parent folders."""
        path = paths.check_sandbox_path(path)
        payload = data.encode() if isinstance(data, str) else bytes(data)
        if self._on_tmpfs(path):
            return self._write_via_exec(path, payload, mode)
        parent, filename = posixpath.split(path)
        archive = tarball.single_file_tar(filename, payload, mode, owner=self._owner())
        with self._engine_errors(f"writing {path}"):
            if not self._put_archive(parent, archive):
                self.mkdir(parent)
                if not self._put_archive(parent, archive):
                    raise SandboxError(f"writing {path} failed: cannot create folder {parent}")

    def _on_tmpfs(self, path: str) -> bool:
        """True for paths on the sandbox's tmpfs mounts, which the archive API cannot see."""
        return any(path == t or path.startswith(t.rstrip("/") + "/") for t in self.effective.tmpfs)

    def _write_via_exec(self, path: str, payload: bytes, mode: int) -> None:
        script = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" -- "$1"'
        code, _, err = self._exec_bytes(["/bin/sh", "-c", script, "sh", path, f"{mode:o}"],
                                        stdin=payload)
        if code != 0:
            reason = _first_line(err.decode(errors="replace"))
            raise SandboxError(f"writing {path} failed: {reason}")

    def _exec_bytes(self, argv: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run argv, returning (exit code, stdout bytes, stderr bytes) undecoded."""
        stream = self.open_exec(argv, stdin=stdin is not None)
        if stdin is not None:
            threading.Thread(target=self._feed, args=(stream, stdin), daemon=True).start()
        chunks: dict[int, list[bytes]] = {STDOUT: [], STDERR: []}
        try:
            while (frame := stream.read_frame()) is not None:
                chunks.setdefault(frame[0], []).append(frame[1])
            code = self._exit_code(stream)
        finally:
            stream.close()
        return (-1 if code is None else code), b"".join(chunks[STDOUT]), b"".join(chunks[STDERR])

    def _put_archive(self, folder: str, archive: bytes) -> bool:
        """Put an archive into ``folder``; False if the folder does not exist."""
        try:
            return bool(self.engine.api.put_archive(self.container_id, folder, archive))
        except NotFound as err:
            if self._inspect() is None:
                raise
            del err
            return False
        except APIError as err:
            text = (err.explanation or str(err)).lower()
            if "no such file" in text or "not a directory" in text:
                return False
            raise

    def read_file(self, path: str) -> bytes:
        """The bytes of the file at ``path``; SandboxNotFound says "No such file"."""
        path = paths.check_sandbox_path(path)
        if self._on_tmpfs(path):
            code, out, err = self._exec_bytes(["cat", "--", path])
            if code != 0 and b"No such file" in err:
                raise SandboxNotFound(f"No such file in sandbox {self.name}: {path}")
            if code != 0:
                reason = _first_line(err.decode(errors="replace"))
                raise SandboxError(f"cannot read {path}: {reason}")
            return out
        with self._engine_errors(f"reading {path}"):
            chunks = self._get_archive(path)
            data = tarball.read_single_file(chunks, path)
        if data is None:
            raise SandboxError(f"cannot read {path}: it is not a regular file (use download())")
        return data

    def _get_archive(self, path: str) -> Iterator[bytes]:
        try:
            stream, _stat = self.engine.api.get_archive(self.container_id, path)
        except NotFound:
            if self._inspect() is None:
                raise
            raise SandboxNotFound(f"No such file in sandbox {self.name}: {path}") from None
        return stream

    def remove_file(self, path: str, recursive: bool = False) -> None:
        """Remove a file (or, with ``recursive``, a folder tree)."""
        path = paths.check_sandbox_path(path)
        result = self.exec(["rm", "-rf" if recursive else "-f", "--", path], user="0")
        if not result.ok:
            raise SandboxError(f"cannot remove {path}: {_first_line(result.stderr)}")

    def file_mode(self, path: str) -> int:
        """The permission bits of ``path`` (SandboxNotFound if it is missing)."""
        path = paths.check_sandbox_path(path)
        result = self.exec(["stat", "-c", "%a", "--", path])
        if not result.ok:
            raise SandboxNotFound(f"No such file in sandbox {self.name}: {path}")
        return int(result.stdout.strip(), 8)

    def exists(self, path: str) -> bool:
        path = paths.check_sandbox_path(path)
        return self.exec(["test", "-e", path]).ok

    def mkdir(self, path: str, parents: bool = True) -> None:
        """Create a folder (and its parents, by default)."""
        path = paths.check_sandbox_path(path)
        result = self.exec(["mkdir", "-p", "--", path] if parents else ["mkdir", "--", path])
        if not result.ok:
            message = _first_line(result.stderr)
            if "No such file" in message:
                raise SandboxNotFound(f"cannot create {path}: No such file or directory (parent)")
            raise SandboxError(f"cannot create {path}: {message}")

    def upload(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy a local file or folder to ``remote`` in the sandbox."""
        source = Path(local).expanduser()
        if not source.exists():
            raise SandboxNotFound(f"No such file on the host: {source}")
        remote = paths.check_sandbox_path(remote)
        parent, leaf = posixpath.split(remote)
        archive = tarball.local_tree_tar(source, leaf, owner=self._owner())
        with self._engine_errors(f"uploading {source} to {remote}"):
            if not self._put_archive(parent, archive):
                self.mkdir(parent)
                self._put_archive(parent, archive)

    def download(self, remote: str, local: str | os.PathLike[str]) -> Path:
        """Copy a file or folder from the sandbox to ``local``; returns the local path."""
        remote = paths.check_sandbox_path(remote)
        dest = Path(local).expanduser()
        with self._engine_errors(f"downloading {remote}"):
            chunks = self._get_archive(remote)
            leaf = posixpath.basename(remote)
            staging = dest.parent / f".agentkernel-{secrets.token_hex(4)}"
            staging.mkdir(parents=True, exist_ok=True)
            try:
                tarball.extract_safely(chunks, staging)
                if not (staging / leaf).exists():  # extract_safely skips links and devices
                    raise SandboxError(
                        f"cannot download {remote}: it is a link or a special file (links and "
                        "devices are never copied out of a sandbox; name the file they point to)"
                    )
                (staging / leaf).replace(dest)
            except ValueError as err:  # an archive member that would land outside staging
                raise SandboxError(f"cannot download {remote}: {err}") from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return dest

    # -- resources -----------------------------------------------------------------------
    def resize(self, cpus: float, memory_mb: int) -> bool:
        """Change CPU and memory limits live. False (and a logged reason) if the engine cannot.

        Success is verified by reading the cgroup limits inside the container.
        """
        cpus = specs.parse_cpus(cpus)
        memory_mb = specs.parse_memory_mb(memory_mb)
        self._check_limits(cpus, memory_mb)
        self.last_resize_error: str | None = None
        try:
            self._update_limits(cpus, memory_mb)
        except SandboxError as err:
            return self._resize_failed(str(err))
        seen = self.cgroup_limits()
        if seen != (cpus, memory_mb):
            return self._resize_failed(
                f"the engine accepted the update but the cgroup shows cpus={seen[0]}, "
                f"memory={seen[1]} MB"
            )
        self.effective = replace(self.effective, cpus=cpus, memory_mb=memory_mb)
        return True

    def _resize_failed(self, reason: str) -> bool:
        self.last_resize_error = reason
        log.warning("live resize of sandbox %s not possible: %s", self.name, reason)
        return False

    def _update_limits(self, cpus: float, memory_mb: int) -> None:
        api = self.engine.api
        quota, memory = int(cpus * CPU_PERIOD), memory_mb * 1024 * 1024
        with self._engine_errors(f"resizing sandbox {self.name}"):
            try:
                api.update_container(
                    self.container_id, cpu_period=CPU_PERIOD, cpu_quota=quota,
                    mem_limit=memory, memswap_limit=memory,
                )
                return
            except NotFound:
                if self.engine.kind != "podman" or self._inspect() is None:
                    raise
            # Podman 4.3 serves no Docker-compatible update endpoint; its libpod API has one.
            body = {
                "cpu": {"quota": quota, "period": CPU_PERIOD},
                "memory": {"limit": memory, "swap": memory},
            }
            url = api._url("/libpod/containers/{0}/update", self.container_id)
            api._raise_for_status(api._post_json(url, data=body))

    def cgroup_limits(self) -> tuple[float | None, int | None]:
        """(cpus, memory MB) as the container's cgroup enforces them; None = unlimited."""
        script = (
            "if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max; "
            "cat /sys/fs/cgroup/memory.max; else "
            "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) "
            "$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); "
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; fi"
        )
        result = self.exec(["/bin/sh", "-c", script])
        lines = result.stdout.split("\n")
        if not result.ok or len(lines) < 2:
            raise SandboxError(f"cannot read the cgroup limits: {_first_line(result.stderr)}")
        return _parse_cpu_line(lines[0]), _parse_memory_line(lines[1])

    # -- ports and status ----------------------------------------------------------------
    @property
    def ports(self) -> list[specs.PortMapping]:
        """Ports as the engine bound them (host ports filled in when auto-assigned)."""
        with self._engine_errors("reading ports"):
            attrs = self._inspect() or {}
        return _port_mappings(attrs)

    @property
    def ip(self) -> str | None:
        with self._engine_errors("reading the address"):
            attrs = self._inspect() or {}
        return _container_ip(attrs)

    def status(self) -> SandboxStatus:
        """Running state, image, limits, ports and uptime."""
        eff = self.effective
        with self._engine_errors("reading status"):
            attrs = self._inspect() if self._container_id else None
        if not attrs:
            state = "not started" if self._container_id is None else "removed"
            return SandboxStatus(
                eff.name, False, state, eff.image, self.engine.kind, eff.profile.name,
                eff.cpus, eff.memory_mb, eff.network, persistent=eff.persistent,
            )
        host = attrs.get("HostConfig", {})
        state = attrs["State"]
        return SandboxStatus(
            name=eff.name,
            running=bool(state.get("Running")),
            state=state.get("Status", "unknown"),
            image=attrs.get("Config", {}).get("Image", eff.image),
            engine=self.engine.kind,
            profile=eff.profile.name,
            cpus=eff.cpus,  # verified by resize(); Podman's inspect keeps the first values
            memory_mb=eff.memory_mb,
            network=host.get("NetworkMode") != "none",
            ports=_port_mappings(attrs),
            uptime_s=_uptime(state.get("StartedAt")) if state.get("Running") else None,
            ip=_container_ip(attrs),
            persistent=eff.persistent,
            container_id=attrs.get("Id", ""),
        )

    # -- many sandboxes ------------------------------------------------------------------
    @classmethod
    def _from_container(cls, engine: Engine, attrs: dict[str, Any]) -> Sandbox:
        labels = attrs.get("Config", {}).get("Labels") or {}
        config = SandboxConfig(
            image=attrs.get("Config", {}).get("Image") or "unknown",
            name=labels.get(LABEL),
            persistent=labels.get(LABEL_PERSISTENT) == "true",
            profile=labels.get(LABEL_PROFILE, "moderate"),
        )
        sandbox = cls.__new__(cls)
        sandbox.config = config
        host = attrs.get("HostConfig", {})
        quota, period = host.get("CpuQuota") or 0, host.get("CpuPeriod") or CPU_PERIOD
        sandbox.effective = replace(
            config.resolve(),
            cpus=quota / period if quota > 0 else None,
            memory_mb=(host.get("Memory") or 0) // (1024 * 1024) or None,
            network=host.get("NetworkMode") != "none",
            user=attrs.get("Config", {}).get("User") or None,
        )
        sandbox._engine = engine
        sandbox._container_id = attrs["Id"]
        sandbox._lifeline = None
        sandbox._finalizer = None
        return sandbox

    @classmethod
    def connect(cls, name: str, *, engine: Engine | None = None) -> Sandbox:
        """Reattach to an existing (persistent) sandbox by name, starting it if stopped."""
        engine = engine or connect()
        found = engine.api.containers(all=True, filters={"label": f"{LABEL}={name}"})
        if not found:
            raise SandboxNotFound(
                f"no sandbox named {name!r} (see `agentkernel list` for the ones that exist)"
            )
        attrs = engine.api.inspect_container(found[0]["Id"])
        sandbox = cls._from_container(engine, attrs)
        if not attrs["State"].get("Running"):
            with sandbox._engine_errors(f"restarting sandbox {name}"):
                engine.api.start(attrs["Id"])
        return sandbox

    @classmethod
    def list(cls, *, engine: Engine | None = None, all: bool = False) -> list[Sandbox]:
        """The sandboxes that run now (``all=True``: stopped ones too)."""
        engine = engine or connect()
        found = engine.api.containers(all=all, filters={"label": LABEL})
        sandboxes = []
        for entry in found:
            with contextlib.suppress(NotFound):
                sandboxes.append(cls._from_container(engine, engine.api.inspect_container(
                    entry["Id"])))
        return sandboxes

    @classmethod
    def run(
        cls,
        image: str,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        engine: Engine | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        **config: Any,
    ) -> ExecResult:
        """Run ``cmd`` once in a fresh sandbox of ``image`` and remove it afterwards.

        ``on_stdout`` / ``on_stderr`` stream the output as in :meth:`exec`.
        """
        config.setdefault("name", f"run-{secrets.token_hex(4)}")
        with cls(SandboxConfig(image=image, **config), engine=engine) as sandbox:
            return sandbox.exec(cmd, timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr)


def tmpfs_mb(memory_mb: int | None) -> int:
    """Size of a sandbox's tmpfs mounts: half its memory limit, at most TMPFS_MAX_MB.

    A tmpfs keeps its files in memory charged to the container's memory limit, so a tmpfs as
    large as that limit would end a disk-filling cell with an OOM kill instead of ENOSPC.
    """
    return TMPFS_MAX_MB if not memory_mb else max(1, min(TMPFS_MAX_MB, memory_mb // 2))


def _parse_cpu_line(line: str) -> float | None:
    quota, _, period = line.strip().partition(" ")
    if quota in ("max", "-1") or not period:
        return None
    return round(int(quota) / int(period), 4)


def _parse_memory_line(line: str) -> int | None:
    value = line.strip()
    if value == "max" or not value.isdigit() or int(value) >= 1 << 60:
        return None
    return int(value) // (1024 * 1024)


def _port_mappings(attrs: dict[str, Any]) -> list[specs.PortMapping]:
    mappings = []
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for key, bindings in sorted(ports.items()):
        port, _, protocol = key.partition("/")
        for binding in bindings or []:
            mappings.append(specs.PortMapping(
                binding.get("HostIp") or "0.0.0.0", int(binding["HostPort"]), int(port),
                protocol or "tcp",
            ))
    return mappings


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
    return max(0.0, (datetime.now(timezone.utc).replace(tzinfo=None) - started).total_seconds())


