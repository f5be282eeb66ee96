"""The ``agentkernel`` command: list, gc, run, shell, status, stop, image build, network,
runtime setup, install.

Every failure is printed as one line ``agentkernel: error: ...``: exit code 2 for a usage
error, 1 for anything else that went wrong (a sandbox or engine error). ``run`` and ``shell``
exit with the command's own exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, NoReturn

from . import netguard, netwatch, runtimes
from .attach import attach_shell
from .config import options
from .config.options import GUARDED_NETWORK
from .engine import ENGINE_KINDS, ContainerSummary, Engine, connect
from .errors import SandboxError, SandboxNotFound, one_line
from .imagebuild import build_image, image_exists
from .sandbox import LABEL, LABEL_OWNER, LABEL_PERSISTENT, Sandbox
from .sandbox.bundle_volume import bundle_volumes, stale_reason
from .sandbox.workspace import LABEL_WORKSPACE
from .sandbox.workspace import detach_leftovers as workspace_detach_leftovers
from .sandbox.workspace import volume_names as workspace_volume_names

PROG = "agentkernel"
DEFAULT_BUILD_TAG = "agentkernel-python:bookworm"
STOPPED_STATES = ("exited", "dead", "stopped")
Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


class _UsageError(Exception):
    """A usage error found after parsing (exit code 2)."""


def _positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: expected seconds above 0")
    return value


# -- helpers -----------------------------------------------------------------------------------
def _engine(args: argparse.Namespace) -> Engine:
    """The engine chosen by --engine, else by AGENTKERNEL_ENGINE."""
    return connect(args.engine)


def _find(engine: Engine, name: str) -> Sandbox:
    """The sandbox called ``name``, running or not, without starting it."""
    for sandbox in Sandbox.list(engine=engine, all=True):
        if sandbox.name == name:
            return sandbox
    raise SandboxNotFound(f"no sandbox named {name!r} (see `{PROG} list --all`)")


def _write(stream: Any) -> Callable[[str], None]:
    """An output callback that writes to ``stream`` at once."""
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


def _table(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join(lines)


# -- list ---------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    """Print the sandboxes (running ones, or all with --all) as a table or JSON."""
    statuses = [s.status() for s in Sandbox.list(engine=_engine(args), all=args.all)]
    if args.json:
        print(json.dumps([asdict(s) for s in statuses], indent=1, default=str))
        return 0
    rows = [["NAME", "STATE", "IMAGE", "PROFILE", "PORTS"]]
    rows += [[s.name, s.state, s.image, s.profile, ", ".join(map(str, s.ports))]
             for s in statuses]
    print(_table(rows))
    return 0


# -- gc -----------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    """True while a process ``pid`` exists on this host (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_gone(owner: str) -> bool:
    """True when ``host:pid`` names a process of this host that no longer exists."""
    host, _, pid = owner.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))


def gc_reason(container: ContainerSummary, everything: bool, persistent: bool) -> str | None:
    """Why ``container`` (an entry of the engine's container list) should go, or None."""
    labels, state = container.labels, container.state
    if labels.get(LABEL_PERSISTENT) == "true":
        return "persistent, --all --persistent" if everything and persistent else None
    if everything:
        return f"{state}, --all"
    owner = labels.get(LABEL_OWNER, "")
    if _owner_gone(owner):
        return f"owner process {owner} is gone"
    if state in STOPPED_STATES:
        return f"not running ({state})"
    return None


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove sandboxes left behind by crashed owners (or all of them with --all); with
    --bundles, also the IPython bundle volumes of older bundles or of removed images."""
    if args.persistent and not args.all:
        raise _UsageError("--persistent only goes with --all (gc --all --persistent)")
    engine = _engine(args)
    failed = _gc_bundles(engine, args.dry_run) if args.bundles else 0
    failed += _gc_workspaces(engine, args.dry_run) if args.workspaces else 0
    found = engine.list_containers([LABEL], all=True)
    doomed = [(c, r) for c in found if (r := gc_reason(c, args.all, args.persistent))]
    for container, reason in doomed:
        label = f"{container.labels.get(LABEL, '?')} ({container.id[:12]}): {reason}"
        if args.dry_run:
            print(f"would remove {label}")
            continue
        try:
            engine.remove_container(container.id)
        except SandboxError as err:
            failed += 1
            print(f"{PROG}: error: cannot remove {label}: {err}", file=sys.stderr)
            continue
        print(f"removed {label}")
    if not doomed and not args.bundles and not args.workspaces:
        print("nothing to remove")
    return 1 if failed else 0


def _gc_workspaces(engine: Engine, dry_run: bool) -> int:
    """Remove the workspaces (what cells wrote in a project copy-on-write) that no container
    mounts or names (a sandbox of a shifted workspace mounts its overlay, not its volumes)
    and whose kernel process is gone (killed, never shut down); return the failures."""
    owners: dict[str, str] = {}
    for volume in engine.list_volumes([LABEL_WORKSPACE]):
        owners.setdefault(volume.labels.get(LABEL_WORKSPACE, ""), volume.labels.get(
            LABEL_OWNER, ""))
    used = {c.labels.get(LABEL_WORKSPACE) for c in engine.list_containers([LABEL_WORKSPACE],
                                                                          all=True)}
    doomed = [(ws, owner) for ws, owner in sorted(owners.items())
              if ws and ws not in used and _owner_gone(owner)]
    failed = sum(_remove_unused(engine, f"workspace {ws}", workspace_volume_names(ws),
                                f"owner process {owner} is gone", dry_run)
                 for ws, owner in doomed)
    if not doomed:
        print("no abandoned workspaces")
    if not dry_run:  # what shifted workspaces left mounted on this host
        for path in workspace_detach_leftovers(engine):
            print(f"detached {path} (left mounted on the host)")
    return failed


def _gc_bundles(engine: Engine, dry_run: bool) -> int:
    """Remove the bundle volumes no sandbox of this host would use, keeping those a container
    (running or stopped, so a persistent sandbox) still mounts; return the failures."""
    doomed = [(name, reason) for name, labels in bundle_volumes(engine)
              if (reason := stale_reason(engine, labels))]
    failed = sum(_remove_unused(engine, f"volume {name}", [name], reason, dry_run)
                 for name, reason in doomed)
    if not doomed:
        print("no old IPython bundle volumes")
    return failed


def _remove_unused(engine: Engine, what: str, names: list[str], reason: str,
                   dry_run: bool) -> bool:
    """Remove the volumes ``names`` (together ``what``) unless a container, running or
    stopped, mounts one; say what was done and why. True when the removal failed."""
    users = sorted({user for name in names for user in engine.volume_users(name)})
    if users:
        print(f"kept {what} ({reason}): used by {', '.join(users)}")
        return False
    if dry_run:
        print(f"would remove {what}: {reason}")
        return False
    try:
        for name in names:
            engine.remove_volume(name)
    except SandboxError as err:  # a sandbox started using it since
        print(f"{PROG}: error: cannot remove {what}: {err}", file=sys.stderr)
        return True
    print(f"removed {what}: {reason}")
    return False


# -- run ----------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run one command in a fresh sandbox, streaming its output; its exit code is ours."""
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise _UsageError("run needs a command: agentkernel run [options] -- CMD [ARG...]")
    given = options.given(args)
    result = Sandbox.run(
        given.pop("image", None), cmd, timeout=args.timeout, engine=_engine(args),
        on_stdout=_write(sys.stdout), on_stderr=_write(sys.stderr), **given,
    )
    return result.exit_code


# -- shell, status, stop ------------------------------------------------------------------------
def cmd_shell(args: argparse.Namespace) -> int:
    """An interactive shell in a (persistent) sandbox, started if it was stopped."""
    sandbox = Sandbox.connect(args.name, engine=_engine(args))
    return attach_shell(sandbox, shell=args.shell, record=args.record)


def cmd_status(args: argparse.Namespace) -> int:
    """Print one sandbox's state, image, limits and ports."""
    print(_find(_engine(args), args.name).status())
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a sandbox (a persistent one is kept unless --rm; others are always removed)."""
    sandbox = _find(_engine(args), args.name)
    if args.rm or not sandbox.effective.persistent:
        sandbox.remove()
        print(f"removed {sandbox.name}")
    else:
        sandbox.stop()
        print(f"stopped {sandbox.name} (persistent: `{PROG} stop --rm {sandbox.name}` removes it)")
    return 0


# -- network ------------------------------------------------------------------------------------
def cmd_network_setup(args: argparse.Namespace) -> int:
    """Make each engine's guarded network and its firewall rules (root; once per boot)."""
    for engine in _engines(args):
        print(netguard.setup(engine))
    return 0


def cmd_network_status(args: argparse.Namespace) -> int:
    """Say, per engine, whether sandboxes with the network get the guarded network."""
    for engine in _engines(args):
        bridge = engine.network_bridge(GUARDED_NETWORK)
        if bridge is None:
            state = "not set up: sandboxes start without network (agentkernel network setup)"
        elif not netguard.available(engine):
            state = (f"network {GUARDED_NETWORK} on {bridge}, but its firewall rules are not "
                     "in force (gone since this host started, or removed or changed since "
                     "setup): sandboxes start without network (agentkernel network setup)")
        elif engine.remote:
            state = (f"network {GUARDED_NETWORK} on {bridge} (a remote engine: its firewall "
                     "rules are its host's, set up there after every boot)")
        else:
            state = f"guarded: network {GUARDED_NETWORK} on {bridge}, firewall rules in place"
            state += (", kept by agentkernel network watch" if netguard.kept() else
                      "; not kept (agentkernel network watch is not running): kernels of "
                      "users other than root start sandboxes without network")
        print(f"{engine.kind}: {state}")
    return 0


def cmd_network_watch(args: argparse.Namespace) -> int:
    """Keep the guard's table as setup left it until stopped (root; a daemon set-up starts)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    netwatch.run()
    return 0


# -- runtime ------------------------------------------------------------------------------------
def cmd_runtime_setup(args: argparse.Namespace) -> int:
    """Install an OCI runtime's launcher and register it with each engine (root; once)."""
    for engine in _engines(args):
        print(runtimes.setup(engine, args.name, args.network))
    return 0


def _engines(args: argparse.Namespace) -> list[Engine]:
    return [connect(kind) for kind in args.engines] if args.engines else [_engine(args)]


# -- image build, install -----------------------------------------------------------------------
def cmd_image_build(args: argparse.Namespace) -> int:
    """Build a Python image with debootstrap (skipped with --if-missing when it exists)."""
    engines = _engines(args)
    if args.if_missing:
        for engine in [e for e in engines if image_exists(e, args.tag)]:
            print(f"image {args.tag} is present in {engine.kind}: nothing to build")
            engines.remove(engine)
        if not engines:
            return 0
    image_id = build_image(
        engines, args.tag, packages=args.packages, suite=args.suite, mirror=args.mirror,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(image_id)
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    """Install the Jupyter kernelspec (the same command as ``python -m agentkernel_kernel
    install``)."""
    from agentkernel_kernel.kernelspec import install_from_args

    install_from_args(args)
    return 0


# -- parser -------------------------------------------------------------------------------------
def _add_run_options(run: argparse.ArgumentParser) -> None:
    """The sandbox options of ``run`` (every option's flag) and its command."""
    options.add_arguments(run)
    run.add_argument("--timeout", type=_positive_seconds, metavar="S",
                     help="kill the command after S seconds (exit code 1)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD",
                     help="the command and its arguments")


def _add_image_commands(image: argparse.ArgumentParser) -> None:
    """``image build``."""
    sub = image.add_subparsers(dest="image_command", required=True, metavar="COMMAND")
    build = sub.add_parser("build", help="build a Python image from Debian packages",
                           description="Build a Python image with debootstrap (needs root) "
                           "and import it into the engine.")
    build.add_argument("--tag", default=DEFAULT_BUILD_TAG,
                       help=f"image name (default: {DEFAULT_BUILD_TAG})")
    build.add_argument("--packages", nargs="+", default=["python3"], metavar="P",
                       help="Debian packages to include (python3 always is)")
    build.add_argument("--suite", default="bookworm", help="Debian suite (default: bookworm)")
    build.add_argument("--mirror", metavar="URL",
                       help="Debian mirror (default: the host's apt source, else deb.debian.org)")
    build.add_argument("--if-missing", action="store_true",
                       help="do nothing for an engine that already has the tag")
    build.add_argument("--engines", nargs="+", choices=["docker", "podman"], metavar="E",
                       help="import into each of these engines (one build); default: --engine")
    build.set_defaults(handler=cmd_image_build)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per subcommand."""
    parser = _Parser(prog=PROG, description="Run notebook cells and commands inside Docker or "
                     "Podman sandboxes.")
    parser.add_argument("--engine", choices=ENGINE_KINDS,
                        help="container engine (default: AGENTKERNEL_ENGINE, else auto)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler | None, text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=text, description=text)
        if handler is not None:
            command.set_defaults(handler=handler)
        return command

    listing = add("list", cmd_list, "List sandboxes.")
    listing.add_argument("--all", action="store_true", help="include stopped ones")
    listing.add_argument("--json", action="store_true", help="print JSON")
    gc = add("gc", cmd_gc, "Remove sandboxes whose owner is gone or which are not running.")
    gc.add_argument("--dry-run", action="store_true", help="only print what would go")
    gc.add_argument("--all", action="store_true", help="every non-persistent sandbox")
    gc.add_argument("--persistent", action="store_true",
                    help="with --all: persistent sandboxes too")
    gc.add_argument("--bundles", action="store_true",
                    help="also remove IPython bundle volumes of older bundles or removed images")
    gc.add_argument("--workspaces", action="store_true",
                    help="also remove the workspaces (files cells wrote in a project) of kernels "
                    "that are gone and no sandbox uses")
    _add_run_options(add("run", cmd_run, "Run one command in a fresh sandbox, then remove it."))
    shell = add("shell", cmd_shell, "Open an interactive shell in a sandbox.")
    shell.add_argument("name", help="sandbox name")
    shell.add_argument("--record", metavar="FILE.cast", help="write an asciicast v2 recording")
    shell.add_argument("--shell", metavar="PATH", help="shell (default: /bin/bash, else /bin/sh)")
    for name, handler, text in (("status", cmd_status, "Show a sandbox's state and limits."),
                                ("stop", cmd_stop, "Stop a sandbox.")):
        add(name, handler, text).add_argument("name", help="sandbox name")
    sub.choices["stop"].add_argument("--rm", action="store_true",
                                     help="remove it, even a persistent one")
    _add_image_commands(add("image", None, "Build images."))
    network = add("network", None, "Set up or show the guarded network (sandboxes with the "
                  "network reach the internet, not the host).").add_subparsers(
        dest="network_command", required=True, metavar="COMMAND")
    for name, handler, text in (
            ("setup", cmd_network_setup, "make each engine's guarded network and its firewall "
             "rules (root; again after every boot)"),
            ("status", cmd_network_status, "whether sandboxes with the network get it")):
        command = network.add_parser(name, help=text, description=text[0].upper() + text[1:])
        command.add_argument("--engines", nargs="+", choices=["docker", "podman"], metavar="E",
                             help="these engines (default: --engine)")
        command.set_defaults(handler=handler)
    text = ("keep the guard's firewall table as setup left it, putting it back when a reload "
            "removes or changes it (root; runs until stopped: set-up starts it after setup)")
    network.add_parser("watch", help=text, description=text[0].upper() + text[1:]
                       ).set_defaults(handler=cmd_network_watch)
    runtime = add("runtime", None, "Set up an OCI runtime for sandboxes (gVisor: runsc)."
                  ).add_subparsers(dest="runtime_command", required=True, metavar="COMMAND")
    text = ("register runtime NAME's launcher with each engine (root; once); then set "
            "c.SandboxConfig.runtime = NAME")
    setup = runtime.add_parser("setup", help=text, description=text[0].upper() + text[1:])
    setup.add_argument("name", choices=sorted(runtimes.KNOWN), metavar="NAME",
                       help=f"the runtime: {', '.join(sorted(runtimes.KNOWN))}")
    setup.add_argument("--network", choices=runtimes.NETWORK_MODES, default="sandbox",
                       help="gVisor's network stack (sandbox, its own: the default) or the "
                       "host's in the container's namespace (host: where gVisor's own fails)")
    setup.add_argument("--engines", nargs="+", choices=["docker", "podman"], metavar="E",
                       help="these engines (default: --engine)")
    setup.set_defaults(handler=cmd_runtime_setup)
    from agentkernel_kernel.kernelspec import add_install_arguments

    add_install_arguments(add("install", cmd_install, "Install the Jupyter kernelspec."))
    return parser


# -- main ---------------------------------------------------------------------------------------
def _fail(message: str, code: int) -> int:
    """Print ``agentkernel: error: message`` on stderr; return ``code``."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return args.handler(args)
    except _UsageError as err:
        return _fail(str(err), 2)
    except SandboxError as err:
        return _fail(str(err), 1)
    except OSError as err:
        return _fail(one_line(err) or type(err).__name__, 1)
    except Exception as err:  # a bug of ours: still one line, never a traceback
        return _fail(f"internal error ({type(err).__name__}: {one_line(err, 200)})", 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
