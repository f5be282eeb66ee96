"""How each sandbox option is typed and described: its help, flag, parser, environment variable.

Every option is declared in two halves, each fact in one place:

- its trait (type, default: ``c.SandboxConfig.<name>`` in config files) is a class attribute of
  :class:`~agentkernel.config.SandboxConfig`, where editors and type checkers see it;
- everything else is its :class:`Option` here: the help text (shared by config files and
  command lines), its command-line spelling (the same for ``%sandbox start`` and
  ``agentkernel run``), the parser of typed text and the environment variable.

:func:`describe_traits` joins the halves when SandboxConfig is defined: it gives each trait its
option's help and refuses (at import) a class and a table that do not name the same options.
:func:`add_arguments` puts the flags on an argparse parser, :func:`given` reads back only the
options a command line set, :func:`from_env` reads the environment variables. What an option
does to the container is written once more, in :mod:`agentkernel.sandbox.request`.

Adding an option: its trait in SandboxConfig, its entry here, its effect in the create request.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from . import specs
from .profiles import PROFILES

if TYPE_CHECKING:
    from traitlets import TraitType

Kind = Literal["value", "list", "map", "switch", "tristate"]
DEFAULT_IMAGE = "python:3.12-slim"
GUARDED_NETWORK = "agentkernel-guarded"  # see agentkernel.netguard
DEFAULT_DISK_MB = 10240


@dataclass(frozen=True)
class Option:
    """One sandbox setting, as typed and described (its trait is SandboxConfig's ``name``).

    ``kind`` says how a command line gives it: ``value`` (``--cpus 2``), ``list`` (repeatable
    ``-p SPEC``, kept as text), ``map`` (repeatable ``-e K=V``), ``switch`` (``--persistent``)
    or ``tristate`` (``--network`` / ``--no-network``; not given means the profile decides).
    ``parse`` turns command-line text into the value (raising ConfigError); for ``list``
    options it validates each spec, which is kept as typed. ``flags`` empty: config files only.
    """

    name: str
    help: str
    kind: Kind = "value"
    flags: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    env: str | None = None

    @property
    def flag(self) -> str:
        """The option's main spelling, for messages: its last (long) flag."""
        return self.flags[-1] if self.flags else self.name


def _profile(text: str) -> str:
    if text not in PROFILES:
        raise ConfigError(f"must be one of {', '.join(PROFILES)}, got {text!r}")
    return text


def _disk_mb(text: str) -> int:
    """A size like the memory limit's (``10g``), or ``0`` for none."""
    return 0 if text.strip() == "0" else specs.parse_memory_mb(text)


def _labels(text: str) -> dict[str, str]:
    """``key=value`` pairs separated by commas (AGENTKERNEL_LABELS)."""
    labels = {}
    for pair in filter(None, text.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid AGENTKERNEL_LABELS entry {pair!r}: expected key=value")
        labels[key.strip()] = value.strip()
    return labels


def _keep(check: Callable[[str], Any]) -> Callable[[str], str]:
    """A parser that validates a spec with ``check`` and keeps the text as typed."""

    def parse(text: str) -> str:
        check(text)
        return text

    return parse


OPTIONS: tuple[Option, ...] = (
    Option("image", "container image", flags=("--image",), metavar="I",
           env="AGENTKERNEL_IMAGE"),
    Option("profile", f"security profile: {', '.join(PROFILES)}",
           flags=("--profile",), parse=_profile, metavar="P", env="AGENTKERNEL_PROFILE"),
    Option("cpus", "CPU limit, e.g. 0.5 or 2 (default: the profile's)", flags=("--cpus",),
           parse=specs.parse_cpus, metavar="N"),
    Option("memory_mb", "memory limit: 1024, 512m, 2g (default: the profile's)",
           flags=("--memory",), parse=specs.parse_memory_mb, metavar="MB"),
    Option("pids_limit", "most processes at once (default: the profile's)",
           flags=("--pids-limit",), parse=specs.parse_count, metavar="N"),
    Option("shm_size_mb", "size of /dev/shm: 64m, 1g (default: the engine's, 64 MB)",
           flags=("--shm-size",), parse=specs.parse_memory_mb, metavar="SIZE"),
    Option("disk_mb", "size limit of the sandbox's writable root file system: 10g, 512m "
           "(default: 10g where the engine's storage can apply one: overlay2/overlay on xfs "
           "with pquota, btrfs, zfs); a size set here that the storage cannot apply is said at "
           "the first cell; 0 for no limit (config files and AGENTKERNEL_DISK_MB only: a cell "
           "cannot raise it)", parse=_disk_mb, env="AGENTKERNEL_DISK_MB"),
    Option("network", "network on or off (default: the profile's)", kind="tristate",
           flags=("--network",)),
    Option("network_name", "the engine network a sandbox with the network joins (config "
           f"files only): {GUARDED_NETWORK!r}, agentkernel's guarded network (`agentkernel "
           "network setup`), by default; '' for the engine's default bridge, from which the "
           "host's services can be reached"),
    Option("ports", f"publish a port: {specs.PORT_USAGE}", kind="list", flags=("-p", "--port"),
           parse=_keep(specs.parse_port), metavar="SPEC"),
    Option("volumes", f"mount {specs.VOLUME_USAGE}", kind="list",
           flags=("-v", "--volume"), parse=_keep(specs.parse_volume), metavar="SPEC"),
    Option("mount_cwd", "mount work_dir (default: the current folder) at /workspace",
           kind="switch", flags=("--mount-cwd",)),
    Option("work_dir", "host folder that --mount-cwd mounts"),
    Option("mount_home", "mount $HOME read-only at /home/user", kind="switch",
           flags=("--mount-home",)),
    Option("workspace", "host folder mounted copy-on-write at its own path: cells see and "
           "change their own copy, the host's files stay as they are (set from the notebook's "
           "project by the policy; config files only)"),
    Option("workspace_id", "names the workspace's engine volumes, so that a restarted kernel "
           "finds the files its cells wrote (default: one per sandbox; config files only)"),
    Option("unsafe_host_paths", "allow mounting host paths that are never reachable or never "
           "writable otherwise (system and engine folders, credentials, Jupyter's folders, the "
           "kernel's Python): for an operator who knows why; config files and the Python API "
           "only"),
    Option("read_only", "read-only root file system (default: the profile's)", kind="tristate",
           flags=("--read-only",)),
    Option("env", "set a variable in the sandbox", kind="map", flags=("-e", "--env"),
           parse=specs.parse_env_pair, metavar="K=V"),
    Option("workdir", "working folder inside the sandbox", flags=("--workdir",), metavar="D"),
    Option("user", "user inside, name or uid[:gid] (default: the profile's)", flags=("--user",),
           metavar="U"),
    Option("hostname", "the sandbox's host name (default: the engine's, its short id)",
           flags=("--hostname",), parse=specs.parse_hostname, metavar="H"),
    Option("name", "sandbox name (default: generated), for %sandbox connect NAME",
           flags=("--name",), metavar="N"),
    Option("persistent", "keep the sandbox when its owner stops or exits", kind="switch",
           flags=("--persistent",)),
    Option("runtime", "OCI runtime, e.g. runsc (gVisor: `agentkernel runtime setup runsc`)",
           flags=("--runtime",), metavar="R", env="AGENTKERNEL_RUNTIME"),
    Option("labels", "extra container labels (env AGENTKERNEL_LABELS='k=v,k2=v2')",
           kind="map", parse=_labels, env="AGENTKERNEL_LABELS"),
)
"""Every option, in the order help texts list them."""

BY_NAME: Mapping[str, Option] = {option.name: option for option in OPTIONS}


def describe_traits(traits: Mapping[str, TraitType]) -> None:
    """Give each config trait of SandboxConfig (``traits``) its option's help, as traitlets'
    ``help=`` would. TypeError when the class and :data:`OPTIONS` do not name the same
    options: each option is a trait there and an entry here, and neither may go alone."""
    missing, extra = set(BY_NAME) - set(traits), set(traits) - set(BY_NAME)
    if missing or extra:
        raise TypeError(
            "SandboxConfig and options.OPTIONS disagree: "
            f"options without a config trait {sorted(missing)}, "
            f"config traits without an option {sorted(extra)}")
    for name, trait in traits.items():
        trait.help = trait.__doc__ = BY_NAME[name].help


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The option values set by environment variables (empty ones ignored)."""
    values = {}
    for option in OPTIONS:
        text = environ.get(option.env or "")
        if not option.env or not text:
            continue
        try:
            values[option.name] = option.parse(text) if option.parse else text
        except ConfigError as err:
            raise ConfigError(f"invalid {option.env} {text!r}: {err}") from None
    return values


def argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from one of our parsers: its ConfigError becomes argparse's
    ArgumentTypeError, whose message argparse keeps (a ValueError's it would drop)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse names it in messages
    return convert


def add_arguments(parser: argparse.ArgumentParser,
                  names: Iterable[str] | None = None) -> None:
    """Put the flags of every option (or of ``names``) on ``parser``; see :func:`given`."""
    for option in (BY_NAME[n] for n in names) if names is not None else OPTIONS:
        if not option.flags:
            continue
        # argparse %-formats help texts: a literal % must be doubled
        common: dict[str, Any] = {"dest": option.name, "help": option.help.replace("%", "%%")}
        if option.kind == "switch":
            parser.add_argument(*option.flags, action="store_true", **common)
        elif option.kind == "tristate":
            group = parser.add_mutually_exclusive_group()
            group.add_argument(*option.flags, action="store_const", const=True, default=None,
                               **common)
            negated = "--no-" + option.flag.removeprefix("--")
            group.add_argument(negated, dest=option.name, action="store_const", const=False,
                               help=f"the opposite of {option.flag}")
        else:
            action = "append" if option.kind in ("list", "map") else "store"
            parse = argument_type(option.parse) if option.parse else None
            parser.add_argument(*option.flags, action=action, type=parse,
                                metavar=option.metavar, **common)


def given(namespace: argparse.Namespace) -> dict[str, Any]:
    """The options a parsed command line set, and only those, as config values.

    Not given means None (a tristate's ``--no-x`` gives False), an unset switch or an empty
    repeat: such options are left out, so the configuration and the profile decide them.
    """
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = getattr(namespace, option.name, None)
        if value is None or (option.kind == "switch" and not value):
            continue
        if option.kind == "map":
            value = dict(value)
        elif option.kind == "list":
            value = list(value)
        values[option.name] = value
    return values

