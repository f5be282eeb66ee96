"""The one source of sandboxes with their runner up: what every kernel, pool and command uses.

A sandbox reaches its owner in one of three ways, and each is one function here:

- ``start_with_runner``: a fresh container, its runner as the container's main process (or an
  exec), its ``ready`` frame read. The kernel's manager, its start child, the warm pool and
  the gateway's kernels all start sandboxes through it.
- ``adopt``: a sandbox another process started and handed over (``StartedSandbox.handoff``,
  sent with its fds over a socket pair by ``agentkernel.handoff``).
- ``find``: a persistent sandbox found by name, with a new runner in it.

The policy is not applied here: the caller gives the configuration the policy made concrete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from . import handoff
from .config import SandboxConfig
from .config.hostpaths import one_check
from .engine import Endpoint, Engine, ExecStream
from .engine.deferred import DeferredEngine
from .errors import SandboxError
from .runner_client import launch_runner, runner_main_command
from .sandbox import Sandbox, image_python
from .sandbox.request import LABEL_OWNER, owner_label


@dataclass
class StartedSandbox:
    """A started sandbox whose runner has said ``ready``; its stream read no further."""

    sandbox: Sandbox
    stream: ExecStream
    ready: dict[str, Any]

    def handoff(self) -> tuple[dict[str, Any], list[int]]:
        """The description another process needs to adopt it, and the fds that go with it
        (``handoff.FD_KEYS`` order); SandboxError when one of them is closed already."""
        sandbox = self.sandbox
        lifeline, reaper_fd = sandbox.lifeline_fds()
        runner = self.stream.fileno()
        if min(lifeline, reaper_fd, runner) < 0:
            raise SandboxError(f"sandbox {sandbox.name} lost a socket (lifeline fd {lifeline}, "
                               f"reaper fd {reaper_fd}, runner fd {runner}): it cannot be "
                               "handed over")
        fds = [lifeline, reaper_fd, runner]
        description = {
            "engine": sandbox.engine.kind,
            "endpoint": sandbox.engine.endpoint().to_dict(),
            "container_id": sandbox.container_id,
            "exec_id": self.stream.exec_id,
            **dict(zip(handoff.FD_KEYS, fds, strict=True)),
            "ready": self.ready,
            "config": {**sandbox.config.values(), "name": sandbox.name},
            "notes": list(sandbox.notes),
        }
        return description, fds

    def release(self) -> None:
        """Close this process's copies of the sockets (another process holds them now)."""
        self.stream.forget()
        self.sandbox.detach()

    def discard(self) -> None:
        """Remove the container (a started sandbox nobody will take)."""
        with contextlib.suppress(Exception):
            self.stream.close()
        self.sandbox.stop()


def start_with_runner(config: SandboxConfig, owner: int | None = None, *,
                      engine: Engine | None = None,
                      progress: Callable[[dict], None] | None = None,
                      on_image: Callable[[str], None] | None = None,
                      clear_way: Callable[[], None] | None = None) -> StartedSandbox:
    """Start a sandbox of ``config`` with its runner, and read the runner's ``ready`` frame.

    ``owner``: the process the sandbox is labelled as belonging to (default: this one).
    ``progress`` gets the image pull's events, ``on_image`` the image's id once known.
    ``clear_way`` is called once the sandbox's own checks have passed, just before anything
    is created (a manager replacing its sandbox stops the old one there, so that a refused
    start leaves it as it was). SandboxError says what failed; nothing is left running then.
    """
    if owner is not None:
        config = config.copy(labels={**config.labels, LABEL_OWNER: owner_label(owner)})
    with one_check():  # the host's protected paths, worked out once for the checks
        sandbox = Sandbox(config, engine=engine)
    sandbox.check_network()  # a network that cannot be guarded is refused before clear_way
    if clear_way is not None:
        clear_way()
    sandbox.start(progress=progress, ipython=True, on_image=on_image,
                  main=runner_main_command())
    try:
        stream, ready = launch_runner(sandbox)
    except SandboxError:
        sandbox.stop()
        raise
    if sandbox.image_id:  # a fresh container's word, before any cell ran in it
        image_python.remember(sandbox.image_id, ready.get("python"))
    return StartedSandbox(sandbox, stream, ready)


def adopt(description: dict[str, Any]) -> StartedSandbox:
    """The sandbox another process handed over (``handoff.with_fds`` made ``description``
    name this process's fds). Its engine is connected on first use: the first reply needs
    only the inherited sockets."""
    engine = cast(Engine, DeferredEngine(description["engine"],
                                         Endpoint.from_dict(description["endpoint"])))
    sandbox = Sandbox.adopt(engine, description["container_id"],
                            (description["lifeline_fd"], description["reaper_fd"]),
                            description.get("config") or {})
    sandbox.notes += description.get("notes") or []
    stream = engine.adopt_exec(description["exec_id"], description["runner_fd"])
    return StartedSandbox(sandbox, stream, description["ready"])


def find(name: str, engine: Engine | None = None) -> StartedSandbox:
    """The persistent sandbox ``name`` (started again when stopped), with a new runner."""
    sandbox = Sandbox.connect(name, engine=engine)
    return StartedSandbox(sandbox, *launch_runner(sandbox))
