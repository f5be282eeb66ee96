"""The operator's policy: what a cell may choose, set outside any notebook.

In the kernel every cell is untrusted, the ``%sandbox`` commands it types included. Whoever
installs or launches the kernel (the operator) sets a :class:`SandboxPolicy`; a cell may choose
anything inside it and nothing outside it, and each refusal is one line naming the rule and
where the operator sets it.

Where the operator sets it, lowest precedence first:

1. the defaults below (safe: the configured profile is the ceiling, only the notebook's own
   folder is reachable and read-only, ports on loopback only, no persistent sandboxes, no
   connecting to a sandbox this kernel did not create, output sanitised);
2. ``c.SandboxPolicy.<rule>`` in ``agentkernel_config.{json,py}`` on the Jupyter config path;
3. the policy file named by ``AGENTKERNEL_POLICY`` (JSON or Python traitlets config);
4. the policy file installed with the kernelspec (``python -m agentkernel_kernel install
   --policy FILE`` copies it next to kernel.json; the kernel's argv names it).

The profile (or the configuration) gives a sandbox's starting size. Unless the operator sets
``max_cpus`` / ``max_memory_mb``, a cell may start or resize a sandbox up to what this host has:
all its CPUs and :data:`HOST_MEMORY_SHARE` of its memory (and never beyond the engine's host,
which the sandbox checks). The operator's profile and runtime are ceilings a cell cannot raise.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Bool, Enum, Float, Int, List, Unicode
from traitlets.config import Config, Configurable

from ..engine.discovery import remote_engine_url
from ..errors import ConfigError, PolicyRefused
from .files import load_config_file, load_config_files
from .hostpaths import forbidden_reason, protected_paths
from .profiles import PROFILE_TABLE, PROFILES
from .workspace import WORKSPACE_MODES, project_root, server_root

POLICY_ENV = "AGENTKERNEL_POLICY"
POLICY_OPTION = "--agentkernel-policy"
"""The kernel's command-line option naming the policy file installed with its kernelspec."""
NOTEBOOK = "{notebook}"
PROJECT = "{project}"
HOST_MEMORY_SHARE = 0.5
"""The share of this host's memory a cell may give its sandbox when the operator sets no
``max_memory_mb`` (the rest is left to the host, Jupyter and other kernels)."""


def _rule(name: str) -> str:
    """Where the operator sets rule ``name``, for refusal messages."""
    return f"(c.SandboxPolicy.{name}, in agentkernel_config.py or the {POLICY_ENV} file)"



@dataclass(frozen=True)
class HostFolder:
    """A host folder the policy lets sandboxes reach, and how."""

    path: Path
    writable: bool

    @property
    def mode(self) -> str:
        return "rw" if self.writable else "ro"


class SandboxPolicy(Configurable):
    """The operator's limits on what a cell may choose. ``c.SandboxPolicy.<rule> = ...``."""

    max_profile = Enum(PROFILES, default_value=None, allow_none=True,
                       help="The most permissive profile a cell may choose (default: the "
                       "configured profile).").tag(config=True)
    max_cpus = Float(None, allow_none=True, help="Most CPUs a sandbox may have (default: all "
                     "of this host's, or no limit when the ceiling profile has none).").tag(
        config=True)
    max_memory_mb = Int(None, allow_none=True, help="Most memory in MB (default: half of this "
                        "host's, or no limit when the ceiling profile has none).").tag(config=True)
    max_pids = Int(None, allow_none=True, help="Most processes (default: the configuration's, "
                   "else the ceiling profile's).").tag(config=True)
    images = List(Unicode(), default_value=["*"], help="Image patterns (fnmatch) a cell may "
                  "use.").tag(config=True)
    host_folders = List(Unicode(), default_value=[f"{PROJECT}:ro"], help="Host folders "
                        "sandboxes may mount or exchange files with, as PATH[:ro|:rw]; "
                        f"{NOTEBOOK} is the notebook's folder (the kernel's working "
                        f"directory), {PROJECT} the project around it (the Jupyter server's "
                        "root, else the notebook's git repository, else its folder; never "
                        "above a folder no sandbox may reach).").tag(config=True)
    workspace = Enum(WORKSPACE_MODES, default_value="copy-on-write", help="How a sandbox sees "
                     "the project: copy-on-write (cells create, change and delete files in "
                     "their own copy; %sandbox export takes chosen ones home), bind (the host "
                     "folder itself, writable where host_folders says :rw), off.").tag(
                         config=True)
    named_volumes = List(Unicode(), default_value=[], help="Engine volume names (fnmatch) a "
                         "cell may mount.").tag(config=True)
    allow_network = Bool(True, help="Whether a sandbox may have the network (the profile "
                         "still decides its default).").tag(config=True)
    port_addresses = List(Unicode(), default_value=["127.0.0.1", "::1"], help="Host addresses "
                          "ports may be published on.").tag(config=True)
    allow_persistent = Bool(False, help="Whether cells may create persistent sandboxes.").tag(
        config=True)
    allow_connect = Bool(False, help="Whether cells may connect to, list or stop sandboxes "
                         "this kernel did not create.").tag(config=True)
    runtimes = List(Unicode(), default_value=[], help="OCI runtimes a cell may choose, besides "
                    "the configured one.").tag(config=True)
    max_download_mb = Int(64, help="Largest download from a sandbox to the host, in MB "
                          "(bytes written).").tag(config=True)
    max_upload_mb = Int(256, help="Largest upload from the host to a sandbox, in MB.").tag(
        config=True)
    max_pull_mb = Int(16, help="Largest pickled value %sandbox pull brings to the host, in MB; "
                      "rebuilding it may use at most 8 times that in memory.").tag(config=True)
    trust_output = Bool(False, help="Pass sandbox output to the page unchanged (scripts run with "
                        "the user's Jupyter session). Default: HTML/SVG/Markdown sanitised, "
                        "scripts isolated in a sandboxed frame.").tag(config=True)

    def __init__(self, config: Config | None = None, notebook_dir: str | os.PathLike | None = None,
                 **rules: Any):
        try:
            super().__init__(config=load_policy_config() if config is None else config)
            for key, value in rules.items():
                setattr(self, key, value)
        except ConfigError:
            raise
        except Exception as err:  # traitlets' TraitError carries a long message
            raise ConfigError(f"invalid policy rule: {str(err).splitlines()[0]}") from None
        self.notebook_dir = Path(notebook_dir or os.getcwd()).resolve()
        self.folders = [self._parse_folder(spec) for spec in self.host_folders]
        for address in self.port_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(f"invalid policy port address {address!r}: expected an IP "
                                  f"address like 127.0.0.1 {_rule('port_addresses')}") from None

    def _parse_folder(self, spec: str) -> HostFolder:
        text, _, mode = spec.rpartition(":") if spec.endswith((":ro", ":rw")) else (spec, "", "ro")
        if text == PROJECT:
            path = self._project(lambda _folder: True) or self.notebook_dir
        else:
            path = self.notebook_dir if text == NOTEBOOK else Path(text).expanduser()
        if not path.is_absolute():
            raise ConfigError(f"invalid policy host folder {spec!r}: expected an absolute "
                              f"PATH[:ro|:rw] or {NOTEBOOK}[:ro|:rw] {_rule('host_folders')}")
        return HostFolder(path.resolve(), mode == "rw")

    def _project(self, allowed: Any) -> Path | None:
        """The project's root (config/workspace.py) among folders no rule forbids and for
        which ``allowed(folder)`` holds; None when not even the notebook's folder may be
        reached."""
        protected = protected_paths(write=False)
        return project_root(
            self.notebook_dir,
            lambda folder: forbidden_reason(folder, protected) is None and allowed(folder),
            server_root())

    def workspace_root(self) -> Path:
        """The host folder a sandbox sees as the notebook's project: the project's root
        within the allowed folders; PolicyRefused when the notebook's folder is not one."""
        root = self._project(lambda folder: any(
            f.path == folder or f.path in folder.parents for f in self.folders))
        if root is None:
            self.host_folder(self.notebook_dir, write=False)  # raises, saying why
            raise PolicyRefused(f"host path {self.notebook_dir} refused {_rule('host_folders')}")
        return root

    def check_policy_files(self, files: list[Path]) -> None:
        """ConfigError when a file the policy came from lies in a folder sandboxes may write
        (a cell could loosen the next sandbox's policy)."""
        for path in files:
            resolved = path.resolve()
            for folder in self.folders:
                if folder.writable and (folder.path == resolved or folder.path in
                                        resolved.parents):
                    raise ConfigError(
                        f"policy file {resolved} refused: it lies in {folder.path}, which the "
                        "policy lets sandboxes write (host_folders :rw); keep policy files "
                        "where no sandbox can write")

    # -- what a cell may choose --------------------------------------------------------------
    def ceiling(self, operator_profile: str) -> str:
        """The most permissive profile allowed."""
        return self.max_profile or operator_profile

    def check_profile(self, profile: str, operator_profile: str) -> None:
        ceiling = self.ceiling(operator_profile)
        if PROFILES.index(profile) < PROFILES.index(ceiling):
            raise PolicyRefused(f"profile {profile} refused: the policy's most permissive "
                                f"profile is {ceiling} {_rule('max_profile')}")

    def limits(self, operator: Any) -> tuple[float | None, int | None, int | None]:
        """(cpus, memory MB, pids) a sandbox may not exceed; None: no limit.

        CPUs and memory: the operator's ``max_cpus`` / ``max_memory_mb``, else this host's
        (:func:`host_size`, or the operator's configured size if larger) when the ceiling
        profile limits them; the profile's own figures are a sandbox's starting size, not a
        ceiling. Processes: ``max_pids``, else the configuration's, else the ceiling profile's.
        """
        ceiling = PROFILE_TABLE[self.ceiling(operator.profile)]
        host_cpus, host_memory_mb = host_size()
        return (
            _first(self.max_cpus, None if ceiling.cpus is None
                   else max(host_cpus, operator.cpus or 0)),
            _first(self.max_memory_mb, None if ceiling.memory_mb is None
                   else max(host_memory_mb, operator.memory_mb or 0)),
            _first(self.max_pids, operator.pids_limit, ceiling.pids_limit),
        )

    def check_limits(self, cpus: float | None, memory_mb: int | None, pids: int | None,
                     operator: Any) -> None:
        """Refuse limits above the policy's (or none where the policy has one)."""
        explicit = (self.max_cpus, self.max_memory_mb, self.max_pids)
        for value, most, name, rule, set_by_operator in zip(
            (cpus, memory_mb, pids), self.limits(operator),
            ("cpus", "memory MB", "processes"), ("max_cpus", "max_memory_mb", "max_pids"),
            (x is not None for x in explicit), strict=True,
        ):
            if most is not None and (value is None or value > most):
                shown = "unlimited" if value is None else f"{value:g}"
                source = "" if set_by_operator or rule == "max_pids" else (
                    ", this host's CPUs" if rule == "max_cpus" else
                    f", {HOST_MEMORY_SHARE:.0%} of this host's memory")
                raise PolicyRefused(f"{name} {shown} refused: the policy allows at most "
                                    f"{most:g}{source} {_rule(rule)}")

    def check_image(self, image: str) -> None:
        if not any(fnmatch.fnmatchcase(image, pattern) for pattern in self.images):
            raise PolicyRefused(f"image {image!r} refused: the policy allows images matching "
                                f"{', '.join(self.images) or 'nothing'} {_rule('images')}")

    def check_network(self, network: bool) -> None:
        if network and not self.allow_network:
            raise PolicyRefused(f"the network refused: the policy keeps sandboxes off the "
                                f"network {_rule('allow_network')}")

    def check_port_address(self, address: str) -> None:
        allowed = {ipaddress.ip_address(a) for a in self.port_addresses}
        if ipaddress.ip_address(address) not in allowed:
            raise PolicyRefused(f"publishing a port on {address} refused: the policy allows "
                                f"{', '.join(self.port_addresses) or 'no address'} "
                                f"{_rule('port_addresses')}")

    def check_runtime(self, runtime: str | None, operator_runtime: str | None) -> None:
        if runtime != operator_runtime and runtime not in self.runtimes:
            allowed = [r for r in [operator_runtime, *self.runtimes] if r] or ["the engine's"]
            raise PolicyRefused(f"runtime {runtime or 'the engine default'!r} refused: the "
                                f"policy allows {', '.join(allowed)} {_rule('runtimes')}")

    def check_persistent(self) -> None:
        if not self.allow_persistent:
            raise PolicyRefused(f"persistent sandboxes refused: the policy does not allow them "
                                f"{_rule('allow_persistent')}")

    def check_named_volume(self, name: str) -> None:
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.named_volumes):
            raise PolicyRefused(f"volume {name!r} refused: the policy allows named volumes "
                                f"matching {', '.join(self.named_volumes) or 'none'} "
                                f"{_rule('named_volumes')}")

    # -- a whole sandbox ---------------------------------------------------------------------
    def apply(self, config: Any, operator: Any, workspace: bool = True) -> tuple[Any, list[str]]:
        """``config`` made concrete and checked against the policy: (config, notes).

        Its name is fixed, ``--mount-cwd`` becomes a mount whose mode is the policy's, and with
        ``workspace`` the notebook's project (``workspace_root``) is given to the sandbox at
        its own path, copy-on-write (or bound, as the policy's ``workspace`` rule says), and
        the notebook's folder is made the working directory, when the profile allows host
        mounts and the folder may be reached; otherwise a note says why it is not.
        ``operator`` is the operator's configuration, whose limits a cell cannot raise.
        Raises PolicyRefused (one line naming the rule) for anything outside the policy.
        """
        notes: list[str] = []
        changes: dict[str, Any] = {"name": config.resolve().name, "mount_cwd": False}
        volumes = list(config.volumes)
        wanted = workspace and self.workspace != "off" and self._wants_workspace(config, volumes)
        if config.mount_cwd:
            folder, path = self.host_folder(config.work_dir or self.notebook_dir, write=False)
            volumes.append(f"{path}:/workspace:{folder.mode}")
        elif wanted and remote_engine_url():
            notes.append(f"the notebook's folder is not mounted: the engine at "
                         f"{remote_engine_url()} is remote (copy files in with %sandbox upload)")
        elif wanted:
            try:
                root = self.workspace_root()
                folder, _ = self.host_folder(root, write=False)
            except PolicyRefused as refused:
                notes.append(f"the notebook's folder is not mounted: {refused}")
            else:
                if self.workspace == "bind":
                    volumes.append(f"{root}:{root}:{folder.mode}")
                else:
                    changes["workspace"] = str(root)
                changes["workdir"] = config.workdir or str(self.notebook_dir)
        changes["volumes"] = volumes
        concrete = config.copy(**changes)
        self.check(concrete.resolve(), operator)
        return concrete, notes

    @staticmethod
    def _wants_workspace(config: Any, volumes: list[str]) -> bool:
        """True unless the profile forbids host mounts, or the configuration mounts a folder
        at /workspace or names a workspace already."""
        taken = any(v.split(":")[1:2] == ["/workspace"] for v in volumes)
        return (PROFILE_TABLE[config.profile].allow_host_mounts and not taken
                and not config.workspace)

    def check(self, eff: Any, operator: Any) -> None:
        """Refuse a resolved sandbox (EffectiveConfig) that goes beyond the policy."""
        self.check_profile(eff.profile.name, operator.profile)
        self.check_limits(eff.cpus, eff.memory_mb, eff.pids_limit, operator)
        self.check_image(eff.image)
        self.check_network(eff.network)
        for port in eff.ports:
            self.check_port_address(port.host_ip)
        self.check_runtime(eff.runtime, operator.runtime)
        if eff.persistent:
            self.check_persistent()
        ceiling = PROFILE_TABLE[self.ceiling(operator.profile)]
        if ceiling.user is not None and eff.user != (operator.user or ceiling.user):
            raise PolicyRefused(f"user {eff.user!r} refused: the {ceiling.name} profile runs "
                                f"cells as {operator.user or ceiling.user} "
                                f"{_rule('max_profile')}")
        if eff.workspace:
            self.host_folder(eff.workspace, write=False)
        for bind in eff.binds:
            if not bind.is_bind:
                self.check_named_volume(bind.source)
                continue
            folder, _ = self.host_folder(bind.source, write=False)
            if not bind.read_only and folder.writable:
                self.host_folder(bind.source, write=True)  # the never-writable paths
            if not bind.read_only and not folder.writable:
                raise PolicyRefused(
                    f"mounting {bind.source} writable refused: the policy gives {folder.path} "
                    f"read-only; mount it read-only (-v {bind.source}:{bind.target}:ro) "
                    f"{_rule('host_folders')}")

    # -- host files --------------------------------------------------------------------------
    def host_folder(self, path: str | os.PathLike, write: bool) -> tuple[HostFolder, Path]:
        """The allowed folder that holds host ``path`` (links resolved) and the path resolved;
        PolicyRefused when no allowed folder does, for writing when ``write``, or when the
        path is one no sandbox may ever reach."""
        resolved = Path(path).expanduser().resolve()
        protected = protected_paths(write)
        reason = forbidden_reason(resolved, protected)
        if reason is not None:
            raise PolicyRefused(f"host path {resolved} refused: {reason}; no policy can allow it")
        for folder in self.folders:
            if resolved == folder.path or folder.path in resolved.parents:
                if write and not folder.writable:
                    raise PolicyRefused(
                        f"writing to {resolved} refused: the policy gives {folder.path} "
                        f"read-only {_rule('host_folders')}")
                reason = forbidden_reason(folder.path, protected)
                if reason is not None:
                    raise PolicyRefused(f"host folder {folder.path} refused: {reason}; no "
                                        "policy can allow it")
                return folder, resolved
        allowed = ", ".join(f"{f.path}:{f.mode}" for f in self.folders) or "none"
        raise PolicyRefused(f"host path {resolved} refused: outside the folders the policy "
                            f"allows ({allowed}) {_rule('host_folders')}")


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def host_size() -> tuple[int, int]:
    """(CPUs, memory MB) a cell may give a sandbox by default: all of this host's CPUs and
    :data:`HOST_MEMORY_SHARE` of its memory."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return os.cpu_count() or 1, int(memory * HOST_MEMORY_SHARE) // (1024 * 1024)


def load_policy_config(kernelspec_file: str | os.PathLike | None = None) -> Config:
    """The policy's config, lowest precedence first: the Jupyter config files, the file named
    by AGENTKERNEL_POLICY, the file installed with the kernelspec (``--policy``)."""
    merged = load_config_files()
    for named in (os.environ.get(POLICY_ENV), kernelspec_file):
        if named:
            merged.merge(load_config_file(Path(named)))
    return merged


def policy_files(kernelspec_file: str | os.PathLike | None = None) -> list[Path]:
    """The files a policy is read from (load_policy_config), those that exist."""
    from jupyter_core.paths import jupyter_config_path

    found = [Path(folder, f"agentkernel_config{suffix}") for folder in jupyter_config_path()
             for suffix in (".json", ".py")]
    found += [Path(named) for named in (os.environ.get(POLICY_ENV), kernelspec_file) if named]
    return [path for path in found if path.is_file()]


def take_policy_option(argv: list[str]) -> str | None:
    """Remove ``--agentkernel-policy PATH`` from ``argv`` (the kernel's command line) and
    return PATH, or None."""
    if POLICY_OPTION not in argv:
        return None
    at = argv.index(POLICY_OPTION)
    value = argv[at + 1] if at + 1 < len(argv) else None
    del argv[at:at + 2]
    return value
