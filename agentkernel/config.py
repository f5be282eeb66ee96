"""SandboxConfig (traitlets) and the security profiles it resolves against.

Precedence, lowest first: trait defaults, jupyter config files (``agentkernel_config.py`` /
``.json`` on the Jupyter config path, or any traitlets config passed in), environment variables
(``AGENTKERNEL_IMAGE``, ``AGENTKERNEL_PROFILE``...), then keyword overrides.
``SandboxConfig.resolve()`` applies the profile and validates everything, giving an
``EffectiveConfig`` that the sandbox turns into an engine request.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode, default
from traitlets.config import Config, Configurable

from . import specs
from .engine import docker_socket_urls, podman_socket_urls
from .errors import ConfigError

DEFAULT_IMAGE = "python:3.12-slim"
PROFILES = ("permissive", "moderate", "restrictive")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
ENGINE_SOCKET_NAMES = ("docker.sock", "podman.sock", "containerd.sock")
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"


@dataclass(frozen=True)
class Profile:
    """What a security profile sets by default and what it forbids."""

    name: str
    network: bool
    memory_mb: int | None
    cpus: float | None
    read_only: bool
    cap_add: tuple[str, ...] | None  # None: the engine's default set, no cap-drop
    no_new_privileges: bool
    pids_limit: int | None
    allow_host_mounts: bool
    allow_network: bool
    user: str | None = None
    tmpfs: tuple[str, ...] = ()


# The few capabilities moderate keeps: enough for package managers and file ownership as root.
MODERATE_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                 "NET_BIND_SERVICE")

PROFILE_TABLE = {
    "permissive": Profile("permissive", True, None, None, False, None, False, None, True, True),
    "moderate": Profile("moderate", True, 512, 1.0, False, MODERATE_CAPS, True, 512, True, True),
    "restrictive": Profile(
        "restrictive", False, 256, 0.5, True, (), True, 128, False, False,
        user="65534:65534", tmpfs=("/tmp",),
    ),
}


@dataclass(frozen=True)
class EffectiveConfig:
    """A fully resolved, validated sandbox request (the profile applied)."""

    image: str
    name: str
    profile: Profile
    cpus: float | None
    memory_mb: int | None
    network: bool
    ports: tuple[specs.PortSpec, ...]
    binds: tuple[specs.VolumeSpec, ...]
    read_only: bool
    tmpfs: tuple[str, ...]
    env: dict[str, str]
    workdir: str | None
    user: str | None
    persistent: bool
    runtime: str | None
    pids_limit: int | None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def container_name(self) -> str:
        return f"agentkernel-{self.name}"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _env_labels() -> dict[str, str]:
    """Labels from AGENTKERNEL_LABELS, ``key=value`` pairs separated by commas."""
    labels = {}
    for pair in filter(None, (_env("AGENTKERNEL_LABELS") or "").split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid AGENTKERNEL_LABELS entry {pair!r}: expected key=value")
        labels[key.strip()] = value.strip()
    return labels


class SandboxConfig(Configurable):
    """Everything that describes a sandbox. Configure as ``c.SandboxConfig.image = ...``."""

    image = Unicode(help="Container image (env AGENTKERNEL_IMAGE).").tag(config=True)
    cpus = Float(None, allow_none=True, help="CPU limit; None: the profile's.").tag(config=True)
    memory_mb = Int(None, allow_none=True, help="Memory limit in MB; None: the profile's.").tag(
        config=True
    )
    network = Bool(None, allow_none=True, help="Network on/off; None: the profile's.").tag(
        config=True
    )
    ports = List(Unicode(), help="[host_ip:][host_port:]container_port[/udp]").tag(config=True)
    mount_cwd = Bool(False, help="Mount work_dir (default: cwd) at /workspace.").tag(config=True)
    work_dir = Unicode(None, allow_none=True, help="Host folder for mount_cwd.").tag(config=True)
    mount_home = Bool(False, help="Mount $HOME read-only at /home/user.").tag(config=True)
    volumes = List(Unicode(), help="name:/path[:ro] or /host:/path[:ro]").tag(config=True)
    read_only = Bool(None, allow_none=True, help="Read-only root; None: the profile's.").tag(
        config=True
    )
    env = Dict(value_trait=Unicode(), key_trait=Unicode(), help="Environment variables.").tag(
        config=True
    )
    workdir = Unicode(None, allow_none=True, help="Working directory inside.").tag(config=True)
    user = Unicode(None, allow_none=True, help="User inside (name or uid[:gid]).").tag(config=True)
    name = Unicode(None, allow_none=True, help="Sandbox name; default: generated.").tag(config=True)
    persistent = Bool(False, help="Keep the container after stop/exit.").tag(config=True)
    profile = Enum(PROFILES, help="Security profile (env AGENTKERNEL_PROFILE).").tag(config=True)
    runtime = Unicode(None, allow_none=True, help="OCI runtime, e.g. runsc (gVisor).").tag(
        config=True
    )
    pids_limit = Int(None, allow_none=True, help="Max processes; None: the profile's.").tag(
        config=True
    )
    labels = Dict(
        value_trait=Unicode(), key_trait=Unicode(),
        help="Extra container labels (env AGENTKERNEL_LABELS='k=v,k2=v2').",
    ).tag(config=True)

    @default("image")
    def _default_image(self) -> str:
        return DEFAULT_IMAGE

    @default("profile")
    def _default_profile(self) -> str:
        return "moderate"

    def __init__(self, config: Config | None = None, **overrides: Any):
        if config is None:
            config = load_config_files()
        unknown = sorted(set(overrides) - set(self.class_trait_names(config=True)))
        if unknown:
            raise ConfigError(
                f"unknown sandbox option(s) {', '.join(unknown)}: accepted are "
                f"{', '.join(sorted(self.class_trait_names(config=True)))}"
            )
        profile = _env("AGENTKERNEL_PROFILE")
        if profile is not None and profile not in PROFILES:
            raise ConfigError(
                f"invalid AGENTKERNEL_PROFILE {profile!r}: choose from {', '.join(PROFILES)}"
            )
        try:
            super().__init__(config=config)
            for key, value in (("image", _env("AGENTKERNEL_IMAGE")), ("profile", profile)):
                if value is not None:
                    setattr(self, key, value)
            self.labels = {**self.labels, **_env_labels()}
            for key, value in overrides.items():
                if value is not None or key in ("network", "read_only"):
                    setattr(self, key, value)
        except ConfigError:
            raise
        except Exception as err:  # traitlets' TraitError carries a long message
            raise ConfigError(f"invalid sandbox option: {str(err).splitlines()[0]}") from None

    def copy(self, **overrides: Any) -> SandboxConfig:
        """A new config with these values changed."""
        values = {k: getattr(self, k) for k in self.class_trait_names(config=True)}
        values.update({k: v for k, v in overrides.items()})
        return SandboxConfig(config=Config(), **values)

    def resolve(self) -> EffectiveConfig:
        """Apply the profile and validate; raises ConfigError with a one-line message."""
        prof = PROFILE_TABLE[self.profile]
        network = prof.network if self.network is None else self.network
        if network and not prof.allow_network:
            raise ConfigError(
                f"profile {prof.name} forbids the network: drop --network or use "
                "--profile moderate"
            )
        ports = tuple(specs.parse_port(p) for p in self.ports)
        if ports and not network:
            raise ConfigError(
                "ports need the network: the sandbox has none (use --network, or drop the ports)"
            )
        cpus = prof.cpus if self.cpus is None else specs.parse_cpus(self.cpus)
        memory_mb = (
            prof.memory_mb if self.memory_mb is None else specs.parse_memory_mb(self.memory_mb)
        )
        read_only = prof.read_only if self.read_only is None else self.read_only
        if prof.read_only and not read_only:
            raise ConfigError(f"profile {prof.name} requires a read-only root filesystem")
        binds = self._mounts(prof)
        name = self.name or f"sbx-{secrets.token_hex(4)}"
        if not NAME_RE.fullmatch(name):
            raise ConfigError(
                f"invalid sandbox name {name!r}: 1-63 letters, digits, '_', '.', '-', "
                "starting with a letter or digit"
            )
        pids = prof.pids_limit if self.pids_limit is None else self.pids_limit
        if pids is not None and pids < 1:
            raise ConfigError(f"invalid pids_limit {pids}: must be at least 1")
        tmpfs = prof.tmpfs or (("/tmp",) if read_only else ())
        env = dict(self.env)
        for key in env:
            specs.parse_env_pair(f"{key}=")
        user = self.user if self.user else prof.user
        if user == prof.user and user is not None:
            env.setdefault("HOME", "/tmp")
        workdir = self.workdir or ("/workspace" if self.mount_cwd else None)
        if workdir is not None and not workdir.startswith("/"):
            raise ConfigError(f"invalid workdir {workdir!r}: must be an absolute path")
        return EffectiveConfig(
            image=self.image, name=name, profile=prof, cpus=cpus, memory_mb=memory_mb,
            network=network, ports=ports, binds=binds, read_only=read_only, tmpfs=tmpfs,
            env=env, workdir=workdir, user=user, persistent=self.persistent,
            runtime=self.runtime, pids_limit=pids, labels=dict(self.labels),
        )

    def _mounts(self, prof: Profile) -> tuple[specs.VolumeSpec, ...]:
        mounts = [specs.parse_volume(v) for v in self.volumes]
        if self.mount_cwd:
            mounts.append(specs.VolumeSpec(self.work_dir or os.getcwd(), "/workspace"))
        if self.mount_home:
            mounts.append(specs.VolumeSpec(str(Path.home()), "/home/user", read_only=True))
        checked = []
        for mount in mounts:
            if not mount.is_bind:
                checked.append(mount)
                continue
            if not prof.allow_host_mounts:
                raise ConfigError(
                    f"profile {prof.name} forbids host mounts ({mount.source}): "
                    "use a named volume or --profile moderate"
                )
            source = str(Path(mount.source).expanduser().resolve())
            exposed = exposed_engine_socket(Path(source))
            if exposed is not None:
                raise ConfigError(
                    f"refusing to mount {source}: it is or holds the engine's socket {exposed}, "
                    "which would hand the sandbox the whole host"
                )
            if not Path(source).exists():
                raise ConfigError(f"invalid mount {mount.source!r}: no such host folder or file")
            home = Path.home().resolve()
            if mount.target == "/home/user" or Path(source) in (home, *home.parents):
                mount = specs.VolumeSpec(source, mount.target, read_only=True)
            checked.append(specs.VolumeSpec(source, mount.target, mount.read_only))
        return tuple(checked)


def engine_socket_paths() -> list[Path]:
    """Where container engines' API sockets are on this host (present or not), resolved."""
    urls = [*podman_socket_urls(), *docker_socket_urls(), f"unix://{CONTAINERD_SOCKET}"]
    urls += [url for url in (_env("DOCKER_HOST"), _env("CONTAINER_HOST")) if url]
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


def load_config_files() -> Config:
    """Merge ``agentkernel_config.{json,py}`` found on the Jupyter config path."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    merged = Config()
    for folder in reversed(jupyter_config_path()):
        for loader_cls, filename in (
            (JSONFileConfigLoader, "agentkernel_config.json"),
            (PyFileConfigLoader, "agentkernel_config.py"),
        ):
            if Path(folder, filename).is_file():
                try:
                    merged.merge(loader_cls(filename, path=folder).load_config())
                except Exception as err:
                    raise ConfigError(
                        f"cannot read {Path(folder, filename)}: {str(err).splitlines()[0]}"
                    ) from None
    return merged
