"""SandboxConfig (traitlets) and its resolution against a security profile.

Precedence, lowest first: option defaults, jupyter config files (``agentkernel_config.py`` /
``.json`` on the Jupyter config path, or any traitlets config passed in), environment variables
(``AGENTKERNEL_IMAGE``, ``AGENTKERNEL_PROFILE``...), then keyword overrides.
``SandboxConfig.resolve()`` applies the profile and validates everything, giving an
``EffectiveConfig`` that :mod:`agentkernel.sandbox.request` turns into an engine request.

Each option is declared once, in two halves with no fact in both: ``SandboxConfig``'s class
body holds its trait (type and default, visible to editors and type checkers), and its entry
in :data:`options.OPTIONS` holds the rest (help, flag, parser, environment variable), which the
command lines and ``from_env`` read without traitlets. :func:`options.describe_traits`, run once
the class exists, gives each trait its entry's help and fails the import when the class and the
table do not name the same options.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode
from traitlets.config import Config, Configurable

from ..errors import ConfigError
from . import options, specs
from .files import load_config_files
from .mounts import check_binds, check_host_folder
from .profiles import DEFAULT_PROFILE, PROFILE_TABLE, PROFILES, Profile

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
CONTAINER_PREFIX = "agentkernel-"


@dataclass(frozen=True)
class EffectiveConfig:
    """A fully resolved, validated sandbox request: every option's value with the profile
    applied (``eff.cpus``, ``eff.binds``...), and the profile itself."""

    profile: Profile
    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(f"EffectiveConfig has no value {name!r}") from None

    def replace(self, **changes: Any) -> EffectiveConfig:
        """A copy with these values changed (e.g. limits after a live resize)."""
        return EffectiveConfig(self.profile, MappingProxyType({**self.values, **changes}))

    @property
    def container_name(self) -> str:
        return f"{CONTAINER_PREFIX}{self.values['name']}"


class SandboxConfig(Configurable):
    """Everything that describes a sandbox. Configure as ``c.SandboxConfig.image = ...``."""

    # One trait per sandbox option, its type and default; its help text is its entry's in
    # options.OPTIONS, given below the class (this docstring heads generated config files).
    image = Unicode(options.DEFAULT_IMAGE).tag(config=True)
    profile = Enum(PROFILES, default_value=DEFAULT_PROFILE).tag(config=True)
    cpus = Float(None, allow_none=True).tag(config=True)
    memory_mb = Int(None, allow_none=True).tag(config=True)
    pids_limit = Int(None, allow_none=True).tag(config=True)
    shm_size_mb = Int(None, allow_none=True).tag(config=True)
    disk_mb = Int(None, allow_none=True, min=0).tag(config=True)
    network = Bool(None, allow_none=True).tag(config=True)
    network_name = Unicode(options.GUARDED_NETWORK).tag(config=True)
    ports = List(Unicode()).tag(config=True)
    volumes = List(Unicode()).tag(config=True)
    mount_cwd = Bool(False).tag(config=True)
    work_dir = Unicode(None, allow_none=True).tag(config=True)
    mount_home = Bool(False).tag(config=True)
    workspace = Unicode(None, allow_none=True).tag(config=True)
    workspace_id = Unicode(None, allow_none=True).tag(config=True)
    unsafe_host_paths = Bool(False).tag(config=True)
    read_only = Bool(None, allow_none=True).tag(config=True)
    env = Dict(key_trait=Unicode(), value_trait=Unicode()).tag(config=True)
    workdir = Unicode(None, allow_none=True).tag(config=True)
    user = Unicode(None, allow_none=True).tag(config=True)
    hostname = Unicode(None, allow_none=True).tag(config=True)
    name = Unicode(None, allow_none=True).tag(config=True)
    persistent = Bool(False).tag(config=True)
    runtime = Unicode(None, allow_none=True).tag(config=True)
    labels = Dict(key_trait=Unicode(), value_trait=Unicode()).tag(config=True)

    def __init__(self, config: Config | None = None, **overrides: Any):
        if config is None:
            config = load_config_files()
        accepted = self.class_trait_names(config=True)
        unknown = sorted(set(overrides) - set(accepted))
        if unknown:
            raise ConfigError(
                f"unknown sandbox option(s) {', '.join(unknown)}: accepted are "
                f"{', '.join(sorted(accepted))}"
            )
        from_env = options.from_env(os.environ)
        try:
            super().__init__(config=config)
            for key, value in from_env.items():
                setattr(self, key, {**self.labels, **value} if key == "labels" else value)
            for key, value in overrides.items():
                if value is not None:  # None: not given, the lower layers decide
                    setattr(self, key, value)
        except ConfigError:
            raise
        except Exception as err:  # traitlets' TraitError carries a long message
            raise ConfigError(f"invalid sandbox option: {str(err).splitlines()[0]}") from None

    def values(self) -> dict[str, Any]:
        """Every option's value."""
        return {name: getattr(self, name) for name in options.BY_NAME}

    def copy(self, **overrides: Any) -> SandboxConfig:
        """A new config with these values changed (None: back to the option's default)."""
        return SandboxConfig(config=Config(), **{**self.values(), **overrides})

    def resolve(self) -> EffectiveConfig:
        """Apply the profile and validate; raises ConfigError with a one-line message."""
        prof = PROFILE_TABLE[self.profile]
        network = prof.network if self.network is None else self.network
        if network and not prof.allow_network:
            raise ConfigError(
                f"profile {prof.name} forbids the network: drop --network or use "
                "--profile moderate"
            )
        if self.network_name in ("host", "none", "bridge") or ":" in self.network_name:
            raise ConfigError(
                f"invalid network_name {self.network_name!r}: a network of its own, "
                f"{options.GUARDED_NETWORK!r} (the default) or '' (the engine's bridge)"
            )
        ports = tuple(specs.parse_port(p) for p in self.ports)
        if ports and not network:
            raise ConfigError(
                "ports need the network: the sandbox has none (use --network, or drop the ports)"
            )
        read_only = prof.read_only if self.read_only is None else self.read_only
        if prof.read_only and not read_only:
            raise ConfigError(f"profile {prof.name} requires a read-only root filesystem")
        name = self.name or f"sbx-{secrets.token_hex(4)}"
        if not NAME_RE.fullmatch(name):
            raise ConfigError(
                f"invalid sandbox name {name!r}: 1-63 letters, digits, '_', '.', '-', "
                "starting with a letter or digit"
            )
        pids = prof.pids_limit if self.pids_limit is None else self.pids_limit
        if pids is not None and pids < 1:
            raise ConfigError(f"invalid pids_limit {pids}: must be at least 1")
        env = dict(self.env)
        for key in env:
            specs.parse_env_pair(f"{key}=")
        user = self.user or prof.user
        if user is not None and user == prof.user:
            env.setdefault("HOME", "/tmp")
        workdir = self.workdir or ("/workspace" if self.mount_cwd else None)
        if workdir is not None and not workdir.startswith("/"):
            raise ConfigError(f"invalid workdir {workdir!r}: must be an absolute path")
        if self.hostname is not None:
            specs.parse_hostname(self.hostname)
        values = {
            **self.values(),
            "name": name,
            "network": network,
            "ports": ports,
            "binds": check_binds(self._mounts(), prof, self.unsafe_host_paths),
            "workspace": None if self.workspace is None else str(check_host_folder(
                self.workspace, prof, write=False, unsafe_host_paths=self.unsafe_host_paths)),
            "read_only": read_only,
            "tmpfs": prof.tmpfs or (("/tmp",) if read_only else ()),
            "cpus": prof.cpus if self.cpus is None else specs.parse_cpus(self.cpus),
            "memory_mb": prof.memory_mb if self.memory_mb is None
            else specs.parse_memory_mb(self.memory_mb),
            "shm_size_mb": None if self.shm_size_mb is None
            else specs.parse_memory_mb(self.shm_size_mb),
            "pids_limit": pids,
            "env": env,
            "user": user,
            "workdir": workdir,
            "labels": dict(self.labels),
        }
        return EffectiveConfig(prof, MappingProxyType(values))

    def _mounts(self) -> list[specs.VolumeSpec]:
        """Every mount asked for: volumes, the working folder, home."""
        mounts = [specs.parse_volume(v) for v in self.volumes]
        if self.mount_cwd:
            mounts.append(specs.VolumeSpec(self.work_dir or os.getcwd(), "/workspace"))
        if self.mount_home:
            mounts.append(specs.VolumeSpec(str(Path.home()), "/home/user", read_only=True))
        return mounts


options.describe_traits(SandboxConfig.class_traits(config=True))
