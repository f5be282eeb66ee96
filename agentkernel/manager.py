"""The current sandbox and its runner: the sandbox's state, from its start to its removal.

Where sandboxes come from is ``start.py``; what each ``%sandbox`` command does with the current
one is ``command_handlers.py``. Shared by the Jupyter kernel and the IPython extension; knows
neither. Output goes through an ``out(stream_name, text)`` callback; failures are SandboxError
with one-line messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from traitlets.config import Config

from . import handoff, start
from .config import SandboxConfig
from .config.hostpaths import one_check
from .config.policy import SandboxPolicy, load_policy_config, policy_files
from .engine import connect, load_backend
from .errors import (
    PolicyRefused,
    RunnerError,
    RunnerGone,
    SandboxDied,
    SandboxError,
)
from .runner_client import READY_TIMEOUT, RunnerSession
from .sandbox import Sandbox, image_python
from .start import StartedSandbox

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
                            source: str = "another process") -> None:
        """Start the default sandbox now, in a thread, so the first cell finds it ready.

        ``handoffs``: the messages of another process that starts it or started it
        (``handoff.receive``: the kernel's start child, or the warm pool that launched this
        process): the image's id as soon as it is known, then the sandbox to adopt; without
        one (that process failed or would not), it is started here. ``source`` names that
        process in the log (which way the sandbox came).

        Otherwise returns once the thread has sent its first request to the engine (at most
        START_CPU_WAIT_S): loading the engine's client library and applying the policy are
        the CPU-bound part of the start, and the caller's own imports (ipykernel) would
        otherwise share the GIL with them and delay the container; while the engine creates
        and starts the container they cost nothing.
        """
        def run() -> None:
            try:
                if handoffs is not None and self._take_started(handoffs, source):
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

    def _take_started(self, handoffs: Iterable[tuple[dict, list[int]]], source: str) -> bool:
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
                    settled = self._adopt_started(message, fds, source)
        return settled

    def _adopt_started(self, message: dict, fds: list[int], source: str) -> bool:
        """Make the sandbox handed over in ``message`` (the fds came with it) current; this
        manager keeps its configuration. False (logged) when that fails."""
        try:
            description = handoff.with_fds(message["handoff"], fds)
        except (KeyError, ValueError) as err:
            log.warning("a bad handoff came: %s", err)
            for fd in fds:  # nothing took them
                os.close(fd)
            return False
        try:
            started = start.adopt(description)
        except (SandboxError, OSError, KeyError) as err:
            log.warning("could not take over the sandbox handed over: %s", err)
            return False
        self._make_current(started, f"handed over by {source}")
        return True

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
        if threading.current_thread() is not self._background:
            self.wait_background()  # the start begun in the background, if any
        with self._lock:
            if self.session is None:
                self._start(self.config, out)
            assert self.session is not None
            return self.session

    def _start(self, config: SandboxConfig, out: Out, replace: bool = False) -> None:
        """Start a sandbox of ``config`` as the policy allows it, with its runner, and make it
        current; with ``replace``, the current one goes first, once the new one has passed the
        policy (a refused start leaves the current sandbox as it was)."""
        self._make_current(self._start_concrete(
            config, progress=_pull_reporter(out), on_image=self._image_known,
            clear_way=self._drop_current if replace else None), "started in this process")

    def _start_concrete(self, config: SandboxConfig, **start_options: Any) -> StartedSandbox:
        """``start.start_with_runner`` on what the policy makes of ``config`` (what it changed
        is in the sandbox's notes, first)."""
        with one_check():  # the host's protected paths, worked out once for all the checks
            concrete, notes = self.policy.apply(config, self.operator)
            started = start.start_with_runner(concrete, **start_options)
        started.sandbox.notes[:0] = notes
        return started

    def start_for_handoff(self, owner: int,
                          on_image: Callable[[str], None]) -> StartedSandbox | None:
        """Start the configured sandbox and its runner for process ``owner`` to adopt (what
        ``start_in_background(handoffs)`` there takes; the sandbox is labelled as that
        process's): the caller sends its ``handoff()`` on, then ``release()``s it. None when
        the engine is remote: streams from a remote engine are relayed by the process that
        opened them (engine/relay.py), so the process that keeps the sandbox must start it."""
        if self.broken is not None:
            raise self.broken
        engine = connect()
        if engine.remote:
            engine.close()
            return None
        return self._start_concrete(self.config, owner=owner, engine=engine, on_image=on_image)

    def _image_known(self, image_id: str) -> None:
        """The first sandbox's image is known: kernel_info may answer with the Python version
        a fresh sandbox of it reported (sandbox/image_python.py)."""
        self._engine_asked.set()
        self._remembered_python = image_python.recall(image_id)
        if self._remembered_python:
            self._python_known.set()

    def _orphan(self, frame: dict) -> None:
        if self.on_orphan is not None:
            self.on_orphan(frame)

    def _make_current(self, started: StartedSandbox, how: str) -> None:
        """Make ``started`` current, with a session on its runner's stream; its notes are
        shown at the next cell. ``how`` it came is logged."""
        sandbox = started.sandbox
        log.info("sandbox %s (%s): %s", sandbox.name, sandbox.container_id[:12], how)
        self.notes += sandbox.notes
        self.created.add(sandbox.name)
        session = RunnerSession(started.stream, ready=started.ready, on_orphan=self._orphan)
        self.sandbox, self.session, self.ready, self.dead_reason = (
            sandbox, session, started.ready, None)

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
                self._make_current(start.find(old.name, engine=old.engine), "found by name")
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
            found = start.find(name)
            self._drop_current()
            self._make_current(found, "found by name")
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

    def current(self) -> Sandbox:
        """The current sandbox, starting the default one on first use."""
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

    def runner_call(self, method: str, *args: Any) -> Any:
        """A runner request of a command (push, pull) on the live session; its failures
        as one-line SandboxErrors."""
        session = self.ensure_session()
        try:
            return getattr(session, method)(*args)
        except RunnerGone as err:
            raise SandboxDied(self._diagnose(str(err))) from None
        except RunnerError as err:
            raise SandboxError(f"%sandbox {method}: {err}") from None


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
    if code > 128 and (code - 128) in set(signal.Signals):
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

