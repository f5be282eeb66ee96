"""The current sandbox and its runner, and what every ``%sandbox`` command does to them.

Shared by the Jupyter kernel and the IPython extension; knows neither. Output goes through an
``out(stream_name, text)`` callback; failures are SandboxError with one-line messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pickle
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from . import magics
from .config import SandboxConfig
from .errors import ConfigError, SandboxError, SandboxNotFound
from .sandbox import Sandbox
from .session import RunnerError, RunnerGone, RunnerSession, runner_command

log = logging.getLogger("agentkernel")

Out = Callable[[str, str], None]
RESTART_HINT = "%sandbox restart to continue"
READY_TIMEOUT = 60.0


class SandboxDied(SandboxError):
    """The sandbox or its runner died; the message says why and how to recover."""


def _ignore(_name: str, _text: str) -> None:
    """An ``out`` that drops everything."""


class SandboxManager:
    """Owns at most one sandbox and the runner session inside it."""

    def __init__(self, config: SandboxConfig | None = None, *, max_transfer_mb: int = 64):
        self.config = config or SandboxConfig()
        self.max_transfer_mb = max_transfer_mb
        self.sandbox: Sandbox | None = None
        self.session: RunnerSession | None = None
        self.ready: dict[str, Any] = {}
        self.dead_reason: str | None = None
        self._lock = threading.RLock()
        self._background: threading.Thread | None = None
        self._background_error: SandboxError | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start_in_background(self) -> None:
        """Start the default sandbox now, in a thread, so the first cell finds it ready."""

        def run() -> None:
            try:
                self.ensure_session()
            except SandboxError as err:
                self._background_error = err
            except Exception as err:  # never let the thread die silently
                self._background_error = SandboxError(f"could not start the sandbox: {err}")

        self._background = threading.Thread(target=run, name="agentkernel-start", daemon=True)
        self._background.start()

    def wait_background(self, timeout: float | None = None) -> None:
        if self._background is not None:
            self._background.join(timeout)

    def ensure_session(self, out: Out = _ignore) -> RunnerSession:
        """The live runner session, starting the default sandbox on first use."""
        with self._lock:
            if self.dead_reason:
                raise SandboxDied(self.dead_reason)
            if self.session is None:
                self._start(self.config, out)
            assert self.session is not None
            return self.session

    def _start(self, config: SandboxConfig, out: Out) -> None:
        sandbox = Sandbox(config)
        sandbox.start(progress=_pull_reporter(out))
        try:
            self._attach(sandbox)
        except SandboxError:
            sandbox.stop()
            raise

    def _attach(self, sandbox: Sandbox) -> None:
        """Launch the runner inside ``sandbox`` and make it current."""
        stream = sandbox.open_exec(runner_command(), workdir=sandbox.effective.workdir)
        session = RunnerSession(stream)
        try:
            self.ready = session.wait_ready(timeout=READY_TIMEOUT)
        except (RunnerGone, TimeoutError) as err:
            session.close()
            raise SandboxError(self._no_runner_reason(sandbox, str(err))) from None
        self.sandbox, self.session, self.dead_reason = sandbox, session, None

    @staticmethod
    def _no_runner_reason(sandbox: Sandbox, detail: str) -> str:
        has_python = sandbox.exec("command -v python3").ok if sandbox.is_running else True
        if not has_python:
            return (
                f"image {sandbox.effective.image!r} has no python3: AgentKernel runs cells with "
                "the image's python3 (3.8 or newer); use a Python image such as "
                "python:3.12-slim, or install python3 in yours"
            )
        return f"the runner did not start in sandbox {sandbox.name}: {detail}"

    def adopt(self, handoff: dict[str, Any]) -> bool:
        """Take over a warm sandbox and its ready runner, handed over by the pool's process.

        False (logged) when that fails; the caller then starts a sandbox the usual way.
        """
        from .pool import adopt

        with self._lock:
            try:
                sandbox, stream, ready = adopt(handoff)
            except (SandboxError, OSError, KeyError) as err:
                log.warning("could not take over the warm sandbox: %s", err)
                return False
            self.config = sandbox.config
            self.sandbox, self.ready, self.dead_reason = sandbox, ready, None
            self.session = RunnerSession(stream, ready=ready)
        return True

    def start(self, config: SandboxConfig, out: Out = _ignore) -> None:
        """Start a sandbox from ``config``, replacing the current one."""
        self.wait_background()
        with self._lock:
            self._drop_current()
            self._start(config, out)
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
                self._drop_current()
                self._start(self.config, out)
        out("stdout", f"{self._describe()}\n")

    def connect(self, name: str, out: Out = _ignore) -> None:
        self.wait_background()
        with self._lock:
            sandbox = Sandbox.connect(name)
            self._drop_current()
            self._attach(sandbox)
        out("stdout", f"{self._describe()}\n")

    def _drop_current(self) -> None:
        session, sandbox = self.session, self.sandbox
        self.session = self.sandbox = None
        self.dead_reason = None
        self._background_error = None
        if session is not None:
            session.close()
        if sandbox is not None:
            sandbox.stop()

    def shutdown(self) -> None:
        """Remove the sandbox (a persistent one is only detached)."""
        self.wait_background(timeout=READY_TIMEOUT)
        with self._lock:
            self._drop_current()

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
                store_history: bool = True, out: Out = _ignore) -> dict:
        """Run a cell in the runner; a dead sandbox raises SandboxDied with the cause."""
        session = self.ensure_session(out)
        try:
            return session.execute(code, on_event=on_event, on_input=on_input, silent=silent,
                                   store_history=store_history)
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

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A non-execute runner request (complete, inspect, is_complete) on the live session."""
        session = self.session
        if session is None or self.dead_reason:
            return None
        try:
            return getattr(session, method)(*args, **kwargs)
        except RunnerGone as err:
            self._diagnose(str(err))
            return None

    # -- %sandbox commands ---------------------------------------------------------------
    def handle(self, command: magics.Command, out: Out,
               namespace: dict[str, Any] | None = None) -> None:
        """Carry out a parsed magic command; output goes to ``out``."""
        handler = getattr(self, f"_do_{type(command).__name__}", None)
        if handler is None:
            raise ConfigError(f"{type(command).__name__} is not available here")
        handler(command, out, namespace)

    def _do_HelpRequest(self, cmd: magics.HelpRequest, out: Out, _ns: Any) -> None:
        out("stdout", cmd.text.rstrip("\n") + "\n")

    def _do_StartCommand(self, cmd: magics.StartCommand, out: Out, _ns: Any) -> None:
        overrides = {
            field.name: getattr(cmd, field.name)
            for field in dataclasses.fields(cmd)
            if getattr(cmd, field.name) not in (None, False, (), {})
            or (field.name in ("network", "read_only") and getattr(cmd, field.name) is False)
        }
        overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
        self.start(self.config.copy(**overrides), out)

    def _do_StopCommand(self, _cmd: Any, out: Out, _ns: Any) -> None:
        self.stop(out)

    def _do_RestartCommand(self, _cmd: Any, out: Out, _ns: Any) -> None:
        self.restart(out)

    def _do_ConnectCommand(self, cmd: magics.ConnectCommand, out: Out, _ns: Any) -> None:
        self.connect(cmd.name, out)

    def _current(self) -> Sandbox:
        self.wait_background()
        if self.sandbox is None:
            self.ensure_session()
        assert self.sandbox is not None
        return self.sandbox

    def _do_StatusCommand(self, _cmd: Any, out: Out, _ns: Any) -> None:
        self.wait_background()
        if self.sandbox is None:
            error = self._background_error
            failed = f" (last start failed: {error})" if error else ""
            out("stdout", f"no sandbox is running{failed}; the next cell starts one, "
                          "or use %sandbox start\n")
            return
        text = str(self.sandbox.status())
        if self.dead_reason:
            text += f"\n  {self.dead_reason}"
        elif self.ready:
            text += f"\n  python  {self.ready.get('python')}"
        out("stdout", text + "\n")

    def _do_PortsCommand(self, _cmd: Any, out: Out, _ns: Any) -> None:
        ports = self._current().ports
        out("stdout", "\n".join(str(p) for p in ports) + "\n" if ports else "no published ports\n")

    def _do_ListCommand(self, _cmd: Any, out: Out, _ns: Any) -> None:
        rows = [
            "\t".join([s.name, s.effective.image, s.effective.profile.name]
                      + (["persistent"] if s.effective.persistent else []))
            for s in Sandbox.list()
        ]
        out("stdout", "\n".join(rows) + "\n" if rows else "no sandboxes are running\n")

    def _do_ResizeCommand(self, cmd: magics.ResizeCommand, out: Out, _ns: Any) -> None:
        sandbox = self._current()
        if not sandbox.resize(cmd.cpus, cmd.memory_mb):
            raise SandboxError(f"live resize not possible: {sandbox.last_resize_error}")
        out("stdout", f"sandbox {sandbox.name} resized: {cmd.cpus:g} CPU, {cmd.memory_mb} MB "
                      "(verified in the cgroup)\n")

    def _do_FileCommand(self, cmd: magics.FileCommand, out: Out, _ns: Any) -> None:
        sandbox = self._current()
        data, mode = cmd.body.encode(), cmd.mode
        if cmd.append:
            with contextlib.suppress(SandboxNotFound):
                data = sandbox.read_file(cmd.path) + data
                if mode is None:
                    mode = sandbox.file_mode(cmd.path)
        sandbox.write_file(cmd.path, data, mode=magics.DEFAULT_FILE_MODE if mode is None else mode)
        verb = "appended to" if cmd.append else "wrote"
        out("stdout", f"{verb} {cmd.path} ({len(cmd.body.encode())} bytes)\n")

    def _do_UploadCommand(self, cmd: magics.UploadCommand, out: Out, _ns: Any) -> None:
        self._current().upload(cmd.local, cmd.remote)
        out("stdout", f"uploaded {cmd.local} -> {cmd.remote}\n")

    def _do_DownloadCommand(self, cmd: magics.DownloadCommand, out: Out, _ns: Any) -> None:
        local = self._current().download(cmd.remote, cmd.local)
        out("stdout", f"downloaded {cmd.remote} -> {local}\n")

    def _do_ExecCommand(self, cmd: magics.ExecCommand, out: Out, _ns: Any) -> None:
        result = self._current().exec(
            cmd.cmd, on_stdout=lambda t: out("stdout", t), on_stderr=lambda t: out("stderr", t)
        )
        if not result.ok:
            raise SandboxError(f"command exited with code {result.exit_code}")

    def _do_PushCommand(self, cmd: magics.PushCommand, out: Out, ns: Any) -> None:
        namespace = _host_namespace(ns, "push")
        values = {}
        for name in cmd.names:
            if name not in namespace:
                raise ConfigError(f"%sandbox push: no variable {name!r} in this namespace")
            self._check_transferable(name, namespace[name])
            values[name] = namespace[name]
        self._runner_call("push", values)
        out("stdout", f"pushed {', '.join(cmd.names)}\n")

    def _do_PullCommand(self, cmd: magics.PullCommand, out: Out, ns: Any) -> None:
        namespace = _host_namespace(ns, "pull")
        namespace.update(self._runner_call("pull", list(cmd.names)))
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

