"""The current sandbox and its runner, and what every ``%sandbox`` command does to them.

Shared by the Jupyter kernel and the IPython extension; knows neither. Output goes through an
``out(stream_name, text)`` callback; failures are SandboxError with one-line messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitlets.config import Config

from . import commands, handoff
from .config import SandboxConfig
from .config.policy import HostFolder, SandboxPolicy, load_policy_config, policy_files
from .engine import Engine, ExecStream, connect, load_backend
from .errors import (
    ConfigError,
    PolicyRefused,
    RunnerError,
    RunnerGone,
    SandboxDied,
    SandboxError,
)
from .paths import check_sandbox_path
from .runner_client import READY_TIMEOUT, RunnerSession, launch_runner, runner_main_command
from .sandbox import Sandbox, image_python, workspace
from .sandbox.request import LABEL_OWNER, owner_label

if TYPE_CHECKING:
    from .pool import WarmSandbox

log = logging.getLogger(__name__)

Out = Callable[[str, str], None]
RESTART_HINT = "%sandbox restart to continue"
MB = 1024 * 1024
ENGINE_WARM_UP_DELAY_S = 0.5  # after the first reply, before a deferred engine connects
START_CPU_WAIT_S = 2.0  # start_in_background's wait for the start's CPU-bound first steps


def _ignore(_name: str, _text: str) -> None:
    """An ``out`` that drops everything."""


class SandboxManager:
    """Owns at most one sandbox and the runner session inside it.

    ``config`` is the operator's configuration (files, environment) and ``policy`` the
    operator's limits; what a cell asks for (``%sandbox start ...``) is applied on top of the
    configuration and checked against the policy, so a cell chooses only within it.
    """

    def __init__(self, config: SandboxConfig | None = None, *,
                 policy: SandboxPolicy | None = None, policy_file: str | None = None,
                 max_transfer_mb: int = 64, workspace_id: str | None = None):
        self.broken: SandboxError | None = None  # an operator configuration that cannot work
        try:
            self.operator = config or SandboxConfig()
            if workspace_id and not self.operator.workspace_id:  # the kernel's, kept by restarts
                self.operator = self.operator.copy(workspace_id=workspace_id)
            self.policy = policy or SandboxPolicy(config=load_policy_config(policy_file))
            self.policy.check_policy_files(policy_files(policy_file))
        except SandboxError as err:
            self.broken = SandboxError(f"the operator's sandbox configuration or policy is "
                                       f"unusable, so no sandbox starts: {err}")
            self.operator, self.policy = SandboxConfig(config=Config()), SandboxPolicy(
                config=Config())
        self.config = self.operator
        self.created: set[str] = set()  # names of the sandboxes this manager started
        self.notes: list[str] = []  # what the user should read at the next cell
        self.max_transfer_mb = max_transfer_mb
        self.sandbox: Sandbox | None = None
        self.session: RunnerSession | None = None
        self.ready: dict[str, Any] = {}
        self.dead_reason: str | None = None
        # Gets frames of the sandbox that belong to no request (a background thread's output
        # or comm messages between cells); the kernel sets it.
        self.on_orphan: Callable[[dict], None] | None = None
        self._lock = threading.RLock()
        self._background: threading.Thread | None = None
        self._background_error: SandboxError | None = None
        self._engine_warming = False
        # kernel_info's Python version while the first sandbox starts (see python_version)
        self._remembered_python: str | None = None
        self._python_known = threading.Event()
        self._engine_asked = threading.Event()  # the first start has reached the engine

    # -- lifecycle -----------------------------------------------------------------------
    def start_in_background(self, handoffs: Iterable[tuple[dict, list[int]]] | None = None,
                            ) -> None:
        """Start the default sandbox now, in a thread, so the first cell finds it ready.

        ``handoffs``: the messages of another process that starts it (the kernel's start
        child, ``handoff.receive``): the image's id as soon as it knows it, then the sandbox
        to adopt; without one (that process failed or would not), it is started here.

        Otherwise returns once the thread has sent its first request to the engine (at most
        START_CPU_WAIT_S): loading the engine's client library and applying the policy are
        the CPU-bound part of the start, and the caller's own imports (ipykernel) would
        otherwise share the GIL with them and delay the container; while the engine creates
        and starts the container they cost nothing.
        """
        def run() -> None:
            try:
                if handoffs is not None and self._take_started(handoffs):
                    return
                with contextlib.suppress(Exception):  # the start below reports any failure
                    load_backend()
                self.ensure_session()
            except SandboxError as err:
                self._background_error = err
            except Exception as err:  # never let the thread die silently
                self._background_error = SandboxError(f"could not start the sandbox: {err}")
            finally:
                self._engine_asked.set()
                self._python_known.set()

        self._background = threading.Thread(target=run, name="agentkernel-start", daemon=True)
        self._background.start()
        if handoffs is None:
            self._engine_asked.wait(START_CPU_WAIT_S)

    def _take_started(self, handoffs: Iterable[tuple[dict, list[int]]]) -> bool:
        """Adopt the sandbox another process started for this manager's configuration (see
        start_in_background), reading its messages to their end (that process has exited
        then). False when it handed none over and said nothing (start it here); True also
        when its start failed (the first cell starts again, and says why). Holds the lock
        meanwhile, so a first cell waits for it instead of starting another."""
        settled = False
        with self._lock:
            for message, fds in handoffs:
                if "image_id" in message:
                    self._image_known(str(message["image_id"]))
                elif "failed" in message:
                    self._background_error = SandboxError(str(message["failed"]))
                    settled = True
                elif not settled:
                    settled = self._adopt_started(message, fds)
        return settled

    def _adopt_started(self, message: dict, fds: list[int]) -> bool:
        """Adopt the handoff in ``message`` (the fds came with it); this manager keeps its
        configuration (the sandbox was started from it)."""
        try:
            description = handoff.with_fds(message["handoff"], fds)
        except (KeyError, ValueError) as err:
            log.warning("the sandbox's start process sent a bad handoff: %s", err)
            return False
        return self._take_over(description) is not None

    def wait_background(self, timeout: float | None = None) -> None:
        if self._background is not None:
            self._background.join(timeout)

    def python_version(self, timeout: float) -> str | None:
        """The sandbox's Python version: its runner's once it is ready. While the first sandbox
        is starting, what a fresh sandbox of the same image reported before
        (``sandbox.image_python``), as soon as the image is known, so kernel_info need not
        wait for the container; else the runner's, waiting for it at most ``timeout``
        seconds. None when no sandbox told."""
        if not self.ready and self._background is not None:
            self._python_known.wait(timeout)
        return self.ready.get("python") or self._remembered_python

    def ensure_session(self, out: Out = _ignore) -> RunnerSession:
        """The live runner session, starting the default sandbox on first use."""
        with self._lock:
            if self.broken is not None:
                raise self.broken
            if self.dead_reason:
                raise SandboxDied(self.dead_reason)
            if self.session is None:
                self._start(self.config, out)
            assert self.session is not None
            return self.session

    def _start(self, config: SandboxConfig, out: Out, replace: bool = False) -> None:
        """Start a sandbox of ``config`` as the policy allows it, with its runner; with
        ``replace``, the current one goes first, once the new one has passed the policy (a
        refused start leaves the current sandbox as it was)."""
        sandbox, stream, ready = self._launch(config, out, replace)
        self.notes += sandbox.notes
        self.created.add(sandbox.name)
        self._make_current(sandbox, stream, ready)

    def _launch(self, config: SandboxConfig, out: Out, replace: bool = False,
                on_image: Callable[[str], None] | None = None, engine: Engine | None = None,
                ) -> tuple[Sandbox, ExecStream, dict]:
        """A started sandbox of ``config`` (what the policy changed is in its notes), its
        runner's stream and ready frame; ``replace`` as in _start."""
        concrete, notes = self.policy.apply(config, self.operator)
        sandbox = Sandbox(concrete, engine=engine)
        sandbox.notes += notes
        sandbox.check_network()  # a network that cannot be guarded is refused here too
        if replace:
            self._drop_current()
        sandbox.start(progress=_pull_reporter(out), ipython=True,
                      on_image=on_image or self._image_known, main=runner_main_command())
        try:
            stream, ready = launch_runner(sandbox)
        except SandboxError:
            sandbox.stop()
            raise
        if sandbox.image_id:  # a fresh container's word, before any cell ran in it
            image_python.remember(sandbox.image_id, ready.get("python"))
        return sandbox, stream, ready

    def start_for_handoff(self, owner: int,
                          on_image: Callable[[str], None]) -> WarmSandbox | None:
        """Start the configured sandbox and its runner for process ``owner`` to adopt (what
        ``start_in_background(handoffs)`` there takes; the sandbox is labelled as that
        process's): the caller sends its ``handoff()`` on, then ``release()``s it. None when
        the engine is remote: streams from a remote engine are relayed by the process that
        opened them (engine/relay.py), so the process that keeps the sandbox must start it."""
        from .pool import WarmSandbox

        if self.broken is not None:
            raise self.broken
        engine = connect()
        if engine.remote:
            engine.close()
            return None
        config = self.config.copy(labels={**self.config.labels, LABEL_OWNER: owner_label(owner)})
        return WarmSandbox(*self._launch(config, _ignore, on_image=on_image, engine=engine))

    def _image_known(self, image_id: str) -> None:
        """The first sandbox's image is known: kernel_info may answer with the Python version
        a fresh sandbox of it reported (sandbox/image_python.py)."""
        self._engine_asked.set()
        self._remembered_python = image_python.recall(image_id)
        if self._remembered_python:
            self._python_known.set()

    def _attach(self, sandbox: Sandbox) -> None:
        """Launch the runner inside ``sandbox`` and make it current."""
        self._make_current(sandbox, *launch_runner(sandbox))

    def _orphan(self, frame: dict) -> None:
        if self.on_orphan is not None:
            self.on_orphan(frame)

    def _make_current(self, sandbox: Sandbox, stream: ExecStream, ready: dict) -> None:
        """Make ``sandbox`` current, with a session on its runner's ``stream``."""
        session = RunnerSession(stream, ready=ready, on_orphan=self._orphan)
        self.sandbox, self.session, self.ready, self.dead_reason = sandbox, session, ready, None

    def adopt(self, description: dict[str, Any]) -> bool:
        """Take over a warm sandbox and its ready runner, handed over by the pool's process (or
        the kernel's start child: start_in_background).

        False (logged) when that fails; the caller then starts a sandbox the usual way.
        """
        with self._lock:
            sandbox = self._take_over(description)
            if sandbox is None:
                return False
            self.config = sandbox.config
        return True

    def _take_over(self, description: dict[str, Any]) -> Sandbox | None:
        """Make the handed-over sandbox current (its notes to be shown); None (logged) when
        that fails. The caller decides what this manager's configuration is then."""
        from .pool import adopt

        with self._lock:
            try:
                sandbox, stream, ready = adopt(description)
            except (SandboxError, OSError, KeyError) as err:
                log.warning("could not take over the warm sandbox: %s", err)
                return None
            self.created.add(sandbox.name)
            self.notes += description.get("notes") or []
            self._make_current(sandbox, stream, ready)
        return sandbox

    def start(self, config: SandboxConfig, out: Out = _ignore) -> None:
        """Start a sandbox from ``config``, replacing the current one."""
        self.wait_background()
        with self._lock:
            self._start(config, out, replace=True)
            self.config = config
        out("stdout", f"{self._describe()}\n")

    def stop(self, out: Out = _ignore) -> None:
        self.wait_background()
        with self._lock:
            if self.sandbox is None:
                out("stdout", "no sandbox is running\n")
                return
            name, kept = self.sandbox.name, self.sandbox.effective.persistent
            self._drop_current()
        out("stdout", f"sandbox {name} stopped" + (" (persistent: kept)\n" if kept else "\n"))

    def restart(self, out: Out = _ignore) -> None:
        """A fresh sandbox with the same configuration (a persistent one is reattached)."""
        self.wait_background()
        with self._lock:
            old = self.sandbox
            if old is not None and old.effective.persistent:
                self._drop_current()
                self._attach(Sandbox.connect(old.name, engine=old.engine))
            else:
                self._start(self.config, out, replace=True)
        out("stdout", f"{self._describe()}\n")

    def connect(self, name: str, out: Out = _ignore) -> None:
        """Attach to the persistent sandbox ``name`` (one this manager started, unless the
        policy allows others)."""
        self.wait_background()
        if name not in self.created and not self.policy.allow_connect:
            raise PolicyRefused(
                f"connecting to sandbox {name!r} refused: it was not started by this kernel, "
                "and the policy allows only those (c.SandboxPolicy.allow_connect, in "
                "agentkernel_config.py or the AGENTKERNEL_POLICY file)")
        with self._lock:
            sandbox = Sandbox.connect(name)
            self._drop_current()
            self._attach(sandbox)
        out("stdout", f"{self._describe()}\n")

    def _drop_current(self, at_once: bool = False) -> None:
        """Stop the current sandbox; ``at_once`` leaves an ephemeral one's removal to its
        reaper instead of waiting for the engine."""
        session, sandbox = self.session, self.sandbox
        self.session = self.sandbox = None
        self.dead_reason = None
        self._background_error = None
        if session is not None:
            session.close(timeout=0 if at_once else 2.0)
        if sandbox is not None and not (at_once and sandbox.leave_to_reaper()):
            sandbox.stop()

    def shutdown(self, at_once: bool = False, keep_workspace: bool = False) -> None:
        """Remove the sandbox (a persistent one is only detached), and the workspace's copy
        of the project with it unless ``keep_workspace`` (a kernel restarting finds it
        again). ``at_once`` (a kernel shutting down for good) leaves an ephemeral sandbox to
        its reaper, which removes it about 0.2 s later, and returns without waiting for the
        engine."""
        self.wait_background(timeout=READY_TIMEOUT)
        with self._lock:
            if self.sandbox is not None and not keep_workspace:
                self.sandbox.discard_workspace()
            self._drop_current(at_once=at_once)

    def _describe(self) -> str:
        assert self.sandbox is not None
        eff = self.sandbox.effective
        limits = ", ".join(
            part for part in (
                f"{eff.cpus:g} CPU" if eff.cpus else "",
                f"{eff.memory_mb} MB" if eff.memory_mb else "",
                "network on" if eff.network else "network off",
            ) if part
        )
        python = self.ready.get("python", "?")
        return (f"sandbox {eff.name} running: {eff.image} (Python {python}; {limits}; "
                f"profile {eff.profile.name}; {self.sandbox.engine.kind})")

    # -- running code --------------------------------------------------------------------
    def execute(self, code: str, *, on_event: Callable[[dict], None],
                on_input: Callable[[str, bool], str] | None = None, silent: bool = False,
                store_history: bool = True, user_expressions: dict | None = None,
                parent: dict | None = None, out: Out = _ignore) -> dict:
        """Run a cell in the runner (see RunnerSession.execute); a dead sandbox raises
        SandboxDied with the cause."""
        session = self.ensure_session(out)
        while self.notes:
            out("stderr", f"[agentkernel] {self.notes.pop(0)}\n")
        try:
            return session.execute(code, on_event=on_event, on_input=on_input, silent=silent,
                                   store_history=store_history,
                                   user_expressions=user_expressions, parent=parent)
        except RunnerGone as err:
            raise SandboxDied(self._diagnose(str(err))) from None
        finally:
            self._connect_engine_soon()

    def _connect_engine_soon(self) -> None:
        """After the first cell of a kernel that took a warm sandbox: connect its deferred
        engine (see engine.deferred) in the background, once the reply is on its way."""
        if self._engine_warming:
            return
        self._engine_warming = True
        warm_up = getattr(self.sandbox.engine if self.sandbox else None, "warm_up", None)
        if warm_up is not None:
            timer = threading.Timer(ENGINE_WARM_UP_DELAY_S, warm_up)
            timer.daemon = True
            timer.start()

    def comm(self, kind: str, fields: dict, *, on_event: Callable[[dict], None],
             parent: dict | None = None) -> dict:
        """Hand a frontend's comm message to the sandbox's comms (RunnerSession.comm)."""
        session = self.ensure_session()
        try:
            return session.comm(kind, fields, on_event=on_event, parent=parent)
        except RunnerGone as err:
            raise SandboxDied(self._diagnose(str(err))) from None

    def interrupt(self) -> None:
        if self.session is not None:
            self.session.interrupt()

    def _diagnose(self, detail: str) -> str:
        """Why the runner went away, with the way back; the sandbox is marked dead."""
        sandbox = self.sandbox
        code = _runner_exit_code(self.session)
        reason = sandbox.death_reason() if sandbox is not None else None
        oom = not reason and sandbox is not None and _oom_killed(sandbox)
        if not reason and not oom and sandbox is not None and code is not None and code > 128:
            reason = _settled_death_reason(sandbox)
        if reason:
            message = f"sandbox stopped: {reason}; {RESTART_HINT}"
        elif oom:
            message = (f"sandbox runner killed: out of memory (limit "
                       f"{sandbox.effective.memory_mb} MB); {RESTART_HINT}")
        else:
            message = f"sandbox runner {_runner_fate(code, detail)}; {RESTART_HINT}"
        self.dead_reason = message
        return message

    def call(self, method: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        """A runner request that may go unanswered (complete, inspect, is_complete,
        comm_info) on the live session: None when there is none, when the runner refuses or
        fails it, or after ``timeout`` seconds."""
        self.wait_background(timeout)
        session = self.session
        if session is None or self.dead_reason:
            return None
        try:
            return getattr(session, method)(*args, timeout=timeout, **kwargs)
        except RunnerGone as err:
            self._diagnose(str(err))
        except (RunnerError, TimeoutError) as err:
            log.info("%s request unanswered: %s", method, err)
        return None

    # -- %sandbox commands ---------------------------------------------------------------
    def handle(self, command: commands.Command, out: Out,
               namespace: dict[str, Any] | None = None) -> None:
        """Carry out a parsed command; output goes to ``out``. ``namespace`` is the host's
        user namespace (the extension), for push and pull."""
        handlers: dict[type, Callable[..., None]] = {
            commands.HelpRequest: lambda cmd: out("stdout", cmd.text.rstrip("\n") + "\n"),
            commands.StartCommand: lambda cmd: self.start(self.operator.copy(**cmd.options), out),
            commands.StopCommand: lambda _cmd: self.stop(out),
            commands.RestartCommand: lambda _cmd: self.restart(out),
            commands.ConnectCommand: lambda cmd: self.connect(cmd.name, out),
            commands.StatusCommand: lambda _cmd: out("stdout", self.status_text() + "\n"),
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

    def _current(self) -> Sandbox:
        self.wait_background()
        if self.sandbox is None:
            self.ensure_session()
        assert self.sandbox is not None
        return self.sandbox

    def status_text(self) -> str:
        """What ``%sandbox status`` shows."""
        self.wait_background()
        if self.sandbox is None:
            error = self._background_error
            failed = f" (last start failed: {error})" if error else ""
            return (f"no sandbox is running{failed}; the next cell starts one, "
                    "or use %sandbox start")
        text = str(self.sandbox.status())
        if self.dead_reason:
            text += f"\n  {self.dead_reason}"
        elif self.ready:
            text += f"\n  python  {self.ready.get('python')}"
        return text

    def _ports(self, out: Out) -> None:
        ports = self._current().ports
        out("stdout", "\n".join(str(p) for p in ports) + "\n" if ports else "no published ports\n")

    def _list(self, out: Out) -> None:
        """The sandboxes on the engine: those this manager started, unless the policy allows
        seeing all of them."""
        visible = [s for s in Sandbox.list()
                   if s.name in self.created or self.policy.allow_connect]
        rows = [
            "\t".join([s.name, s.effective.image, s.effective.profile.name]
                      + (["persistent"] if s.effective.persistent else []))
            for s in visible
        ]
        out("stdout", "\n".join(rows) + "\n" if rows else "no sandboxes are running\n")

    def _resize(self, cmd: commands.ResizeCommand, out: Out) -> None:
        sandbox = self._current()
        self.policy.check_limits(cmd.cpus, cmd.memory_mb, sandbox.effective.pids_limit,
                                 self.operator)
        sandbox.resize(cmd.cpus, cmd.memory_mb)
        out("stdout", f"sandbox {sandbox.name} resized: {cmd.cpus:g} CPU, {cmd.memory_mb} MB "
                      "(verified in the cgroup)\n")

    def _write_file(self, cmd: commands.FileCommand, out: Out) -> None:
        sandbox = self._current()
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
        self._current().upload(path, cmd.remote, within=folder.path,
                               max_bytes=self.policy.max_upload_mb * MB)
        out("stdout", f"uploaded {cmd.local} -> {cmd.remote}\n")

    def _download(self, cmd: commands.DownloadCommand, out: Out) -> None:
        """A sandbox file or folder to the host: only into a folder the policy makes
        writable, at most max_download_mb."""
        check_sandbox_path(cmd.remote)  # the sandbox side's rules are said first
        folder, path = self._host_path(cmd.local, write=True)
        local = self._current().download(cmd.remote, path, within=folder.path,
                                         max_bytes=self.policy.max_download_mb * MB)
        out("stdout", f"downloaded {cmd.remote} -> {local}\n")

    def _host_path(self, typed: str, write: bool) -> tuple[HostFolder, Path]:
        """The allowed folder holding the host path a command names, and that path; refused
        when a link is on it: the policy's check resolves links, and a sandbox may have
        planted ``results -> /elsewhere`` in a folder it can write, to send the file (or take
        it from) somewhere the command did not name."""
        folder, resolved = self.policy.host_folder(typed, write=write)
        named = Path(os.path.normpath(Path(typed).expanduser().absolute()))
        if named != resolved:
            raise PolicyRefused(f"host path {typed} refused: it goes through a link (to "
                                f"{resolved}); links on a host path are never followed, name "
                                "the place itself")
        return folder, resolved

    def _changes(self) -> tuple[Sandbox, Path, list[workspace.Change]]:
        """The current sandbox, its workspace's root, and what cells changed there."""
        sandbox = self._current()
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
                             max_bytes=self.policy.max_download_mb * MB)
        deleted = [c.path for c in chosen if c.kind == "deleted"]
        lines = [f"exported {c.path}" for c in copies]
        lines += [f"kept on the host: {path} (deleted in the sandbox)" for path in deleted]
        out("stdout", "\n".join(lines or ["nothing to export: cells changed nothing"]) + "\n")

    def _workspace_path(self, root: Path, text: str) -> str:
        """``text`` (relative to the notebook's folder, or absolute) as a path relative to the
        workspace's ``root``; ConfigError when it lies outside."""
        path = Path(os.path.normpath(self.policy.notebook_dir / text))
        if path == root:
            return ""
        if root not in path.parents:
            raise ConfigError(f"%sandbox export: {text} is outside the workspace {root}")
        return path.relative_to(root).as_posix()

    def _exec(self, cmd: commands.ExecCommand, out: Out) -> None:
        result = self._current().exec(
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
        self._runner_call("push", values)
        out("stdout", f"pushed {', '.join(cmd.names)}\n")

    def _pull(self, cmd: commands.PullCommand, out: Out, ns: dict[str, Any] | None) -> None:
        namespace = _host_namespace(ns, "pull")
        namespace.update(self._runner_call("pull", list(cmd.names),
                                           self.policy.max_pull_mb * MB))
        out("stdout", f"pulled {', '.join(cmd.names)}\n")

    def _check_transferable(self, name: str, value: Any) -> None:
        try:
            data = pickle.dumps(value)
        except Exception as err:
            raise ConfigError(
                f"%sandbox push: {name!r} cannot be copied ({type(err).__name__}: "
                f"{str(err)[:100]}); only picklable values can"
            ) from None
        if len(data) > self.max_transfer_mb * 1024 * 1024:
            raise ConfigError(
                f"%sandbox push: {name!r} is {len(data) // (1024 * 1024)} MB pickled, over the "
                f"{self.max_transfer_mb} MB limit (SandboxMagics.max_transfer_mb)"
            )

    def _runner_call(self, method: str, *args: Any) -> Any:
        session = self.ensure_session()
        try:
            return getattr(session, method)(*args)
        except RunnerGone as err:
            raise SandboxDied(self._diagnose(str(err))) from None
        except RunnerError as err:
            raise SandboxError(f"%sandbox {method}: {err}") from None


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


def _runner_exit_code(session: RunnerSession | None) -> int | None:
    """The runner's exit code, once the engine has recorded it (None: unknown or running)."""
    for _ in range(10):
        code = session.exit_code() if session is not None else None
        if code is not None:
            return code
        time.sleep(0.05)
    return None


def _settled_death_reason(sandbox: Sandbox, wait: float = 0.5) -> str | None:
    """death_reason() once the engine caught up: a killed container's processes die (and the
    runner's stream ends) a moment before the engine reports the container stopped."""
    deadline = time.monotonic() + wait
    while (reason := sandbox.death_reason()) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return reason


def _runner_fate(code: int | None, detail: str) -> str:
    """What became of the runner: its exit code or signal (``code``, when the engine told), and
    why the session gave up on it (``detail``)."""
    if code is None:
        return f"failed ({detail})"
    fate = f"exited with code {code}"
    if code > 128 and (code - 128) in signal.Signals._value2member_map_:
        fate = f"was killed by {signal.Signals(code - 128).name}"
    return fate if detail == "the runner exited" else f"{fate} ({detail})"


def _oom_killed(sandbox: Sandbox) -> bool:
    """True when the container's cgroup has OOM-killed a process."""
    try:
        result = sandbox.exec(
            "cat /sys/fs/cgroup/memory.events 2>/dev/null || "
            "cat /sys/fs/cgroup/memory/memory.oom_control", timeout=10
        )
    except SandboxError:
        return False
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
            return True
    return False


def _pull_reporter(out: Out) -> Callable[[dict], None]:
    """Turn pull events into a few lines on stderr (one per layer status change)."""
    last: dict[str, str] = {}
    started = time.monotonic()

    def report(event: dict) -> None:
        status = str(event.get("status", ""))
        layer = str(event.get("id", ""))
        if status and last.get(layer) != status and "Downloading" not in status:
            last[layer] = status
            out("stderr", f"[pull {time.monotonic() - started:5.1f}s] {layer} {status}\n".replace(
                "  ", " "))

    return report

