"""What each ``%sandbox`` command does to the current sandbox (a SandboxManager's).

The command model and its parser are ``commands.py``; the sandbox's state (start, stop,
restart, connect, the runner session) is ``manager.py``. Shared by the Jupyter kernel and the
IPython extension; output goes through an ``out(stream_name, text)`` callback, failures are
SandboxError with one-line messages.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import commands
from .config.policy import HostFolder
from .errors import ConfigError, PolicyRefused, SandboxError
from .manager import MB, Out, SandboxManager
from .paths import check_sandbox_path
from .sandbox import Sandbox, workspace


def handle(manager: SandboxManager, command: commands.Command, out: Out,
           namespace: dict[str, Any] | None = None) -> None:
    """Carry out a parsed command on ``manager``'s sandbox; output goes to ``out``.
    ``namespace`` is the host's user namespace (the extension), for push and pull."""
    CommandHandlers(manager).handle(command, out, namespace)


class CommandHandlers:
    """The handlers of ``%sandbox`` commands on one manager's sandbox."""

    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager

    def handle(self, command: commands.Command, out: Out,
               namespace: dict[str, Any] | None = None) -> None:
        """Carry out a parsed command; output goes to ``out``. ``namespace`` is the host's
        user namespace (the extension), for push and pull."""
        manager = self.manager
        handlers: dict[type, Callable[..., None]] = {
            commands.HelpRequest: lambda cmd: out("stdout", cmd.text.rstrip("\n") + "\n"),
            commands.StartCommand: lambda cmd: manager.start(
                manager.operator.copy(**cmd.options), out),
            commands.StopCommand: lambda _cmd: manager.stop(out),
            commands.RestartCommand: lambda _cmd: manager.restart(out),
            commands.ConnectCommand: lambda cmd: manager.connect(cmd.name, out),
            commands.StatusCommand: lambda _cmd: out("stdout", manager.status_text() + "\n"),
            commands.PortsCommand: lambda _cmd: self._ports(out),
            commands.ListCommand: lambda _cmd: self._list(out),
            commands.ResizeCommand: lambda cmd: self._resize(cmd, out),
            commands.FileCommand: lambda cmd: self._write_file(cmd, out),
            commands.UploadCommand: lambda cmd: self._upload(cmd, out),
            commands.DownloadCommand: lambda cmd: self._download(cmd, out),
            commands.ChangesCommand: lambda _cmd: self._list_changes(out),
            commands.ExportCommand: lambda cmd: self._export(cmd, out),
            commands.ExecCommand: lambda cmd: self._exec(cmd, out),
            commands.PushCommand: lambda cmd: self._push(cmd, out, namespace),
            commands.PullCommand: lambda cmd: self._pull(cmd, out, namespace),
        }
        handler = handlers.get(type(command))
        if handler is None:
            raise ConfigError(f"{type(command).__name__} is not available here")
        handler(command)

    def _ports(self, out: Out) -> None:
        ports = self.manager.current().ports
        out("stdout", "\n".join(str(p) for p in ports) + "\n" if ports else "no published ports\n")

    def _list(self, out: Out) -> None:
        """The sandboxes on the engine: those this manager started, unless the policy allows
        seeing all of them."""
        visible = [s for s in Sandbox.list()
                   if s.name in self.manager.created or self.manager.policy.allow_connect]
        rows = [
            "\t".join([s.name, s.effective.image, s.effective.profile.name]
                      + (["persistent"] if s.effective.persistent else []))
            for s in visible
        ]
        out("stdout", "\n".join(rows) + "\n" if rows else "no sandboxes are running\n")

    def _resize(self, cmd: commands.ResizeCommand, out: Out) -> None:
        sandbox = self.manager.current()
        self.manager.policy.check_limits(cmd.cpus, cmd.memory_mb, sandbox.effective.pids_limit,
                                 self.manager.operator)
        sandbox.resize(cmd.cpus, cmd.memory_mb)
        out("stdout", f"sandbox {sandbox.name} resized: {cmd.cpus:g} CPU, {cmd.memory_mb} MB "
                      "(verified in the cgroup)\n")

    def _write_file(self, cmd: commands.FileCommand, out: Out) -> None:
        sandbox = self.manager.current()
        mode = commands.DEFAULT_FILE_MODE if cmd.mode is None else cmd.mode
        if cmd.append:  # inside the sandbox: nothing is read back to the host
            sandbox.append_file(cmd.path, cmd.body, mode=mode)
        else:
            sandbox.write_file(cmd.path, cmd.body, mode=mode)
        verb = "appended to" if cmd.append else "wrote"
        out("stdout", f"{verb} {cmd.path} ({len(cmd.body.encode())} bytes)\n")

    def _upload(self, cmd: commands.UploadCommand, out: Out) -> None:
        """A host file or folder into the sandbox: only from a folder the policy allows."""
        check_sandbox_path(cmd.remote)  # the sandbox side's rules are said first
        folder, path = self._host_path(cmd.local, write=False)
        self.manager.current().upload(path, cmd.remote, within=folder.path,
                               max_bytes=self.manager.policy.max_upload_mb * MB)
        out("stdout", f"uploaded {cmd.local} -> {cmd.remote}\n")

    def _download(self, cmd: commands.DownloadCommand, out: Out) -> None:
        """A sandbox file or folder to the host: only into a folder the policy makes
        writable, at most max_download_mb."""
        check_sandbox_path(cmd.remote)  # the sandbox side's rules are said first
        folder, path = self._host_path(cmd.local, write=True)
        local = self.manager.current().download(cmd.remote, path, within=folder.path,
                                         max_bytes=self.manager.policy.max_download_mb * MB)
        out("stdout", f"downloaded {cmd.remote} -> {local}\n")

    def _host_path(self, typed: str, write: bool) -> tuple[HostFolder, Path]:
        """The allowed folder holding the host path a command names, and that path; refused
        when a link is on it: the policy's check resolves links, and a sandbox may have
        planted ``results -> /elsewhere`` in a folder it can write, to send the file (or take
        it from) somewhere the command did not name."""
        folder, resolved = self.manager.policy.host_folder(typed, write=write)
        named = Path(os.path.normpath(Path(typed).expanduser().absolute()))
        if named != resolved:
            raise PolicyRefused(f"host path {typed} refused: it goes through a link (to "
                                f"{resolved}); links on a host path are never followed, name "
                                "the place itself")
        return folder, resolved

    def _changes(self) -> tuple[Sandbox, Path, list[workspace.Change]]:
        """The current sandbox, its workspace's root, and what cells changed there."""
        sandbox = self.manager.current()
        root = sandbox.effective.workspace
        if not root or not sandbox.workspace_id:
            raise ConfigError("this sandbox has no copy-on-write workspace (the policy's "
                              "workspace rule is bind or off, the profile mounts no host "
                              "folder, or the engine is remote): there is nothing to list")
        return sandbox, Path(root), workspace.changes(
            sandbox.engine, sandbox.workspace_id, sandbox.effective.image, root)

    def _list_changes(self, out: Out) -> None:
        _sandbox, root, changed = self._changes()
        if not changed:
            out("stdout", f"no changes in the workspace {root}\n")
            return
        rows = "\n".join(str(change) for change in changed)
        out("stdout", f"changes in the workspace {root} (the host's files are as they were; "
                      f"%sandbox export PATH copies one home):\n{rows}\n")

    def _export(self, cmd: commands.ExportCommand, out: Out) -> None:
        """Copy chosen workspace changes to the same place on the host: only into folders the
        policy makes writable, never into a .git folder, never through a link."""
        sandbox, root, changed = self._changes()
        wanted = [""] if cmd.all else [self._workspace_path(root, p) for p in cmd.paths]
        chosen = [c for c in changed if any(_under(c.path, w) for w in wanted)]
        missing = [p for p, w in zip(cmd.paths, wanted, strict=False)
                   if not any(_under(c.path, w) for c in changed)]
        if missing:
            raise ConfigError(f"%sandbox export: cells did not create or change "
                              f"{', '.join(missing)} (see %sandbox changes)")
        copies = [c for c in chosen if c.kind != "deleted" and not any(
            _under(c.path, o.path) and c.path != o.path for o in chosen
            if o.kind == "added" and o.folder)]
        for change in copies:
            if ".git" in change.path.split("/"):
                raise PolicyRefused(f"exporting {change.path} refused: nothing is copied into "
                                    "a .git folder (its config and hooks run on the host)")
        for change in copies:
            folder, dest = self._host_path(str(root / change.path), write=True)
            sandbox.download(str(root / change.path), dest, within=folder.path,
                             max_bytes=self.manager.policy.max_download_mb * MB)
        deleted = [c.path for c in chosen if c.kind == "deleted"]
        lines = [f"exported {c.path}" for c in copies]
        lines += [f"kept on the host: {path} (deleted in the sandbox)" for path in deleted]
        out("stdout", "\n".join(lines or ["nothing to export: cells changed nothing"]) + "\n")

    def _workspace_path(self, root: Path, text: str) -> str:
        """``text`` (relative to the notebook's folder, or absolute) as a path relative to the
        workspace's ``root``; ConfigError when it lies outside."""
        path = Path(os.path.normpath(self.manager.policy.notebook_dir / text))
        if path == root:
            return ""
        if root not in path.parents:
            raise ConfigError(f"%sandbox export: {text} is outside the workspace {root}")
        return path.relative_to(root).as_posix()

    def _exec(self, cmd: commands.ExecCommand, out: Out) -> None:
        result = self.manager.current().exec(
            cmd.cmd, on_stdout=lambda t: out("stdout", t), on_stderr=lambda t: out("stderr", t)
        )
        if not result.ok:
            raise SandboxError(f"command exited with code {result.exit_code}")

    def _push(self, cmd: commands.PushCommand, out: Out, ns: dict[str, Any] | None) -> None:
        namespace = _host_namespace(ns, "push")
        values = {}
        for name in cmd.names:
            if name not in namespace:
                raise ConfigError(f"%sandbox push: no variable {name!r} in this namespace")
            self._check_transferable(name, namespace[name])
            values[name] = namespace[name]
        self.manager.runner_call("push", values)
        out("stdout", f"pushed {', '.join(cmd.names)}\n")

    def _pull(self, cmd: commands.PullCommand, out: Out, ns: dict[str, Any] | None) -> None:
        namespace = _host_namespace(ns, "pull")
        namespace.update(self.manager.runner_call("pull", list(cmd.names),
                                           self.manager.policy.max_pull_mb * MB))
        out("stdout", f"pulled {', '.join(cmd.names)}\n")

    def _check_transferable(self, name: str, value: Any) -> None:
        try:
            data = pickle.dumps(value)
        except Exception as err:
            raise ConfigError(
                f"%sandbox push: {name!r} cannot be copied ({type(err).__name__}: "
                f"{str(err)[:100]}); only picklable values can"
            ) from None
        if len(data) > self.manager.max_transfer_mb * 1024 * 1024:
            raise ConfigError(
                f"%sandbox push: {name!r} is {len(data) // (1024 * 1024)} MB pickled, over the "
                f"{self.manager.max_transfer_mb} MB limit (SandboxMagics.max_transfer_mb)"
            )


def _under(path: str, folder: str) -> bool:
    """True when workspace path ``path`` is ``folder`` or lies in it ("" is the root)."""
    return not folder or path == folder or path.startswith(folder + "/")


def _host_namespace(ns: dict[str, Any] | None, verb: str) -> dict[str, Any]:
    if ns is None:
        raise ConfigError(
            f"%sandbox {verb} copies values between a host IPython session and the sandbox: "
            "use it with %load_ext agentkernel (in this kernel all code already runs inside)"
        )
    return ns
