"""Sandbox: one managed container. Lifecycle, exec, files, resources, status.

Nothing here knows Jupyter or an engine's client library: the sandbox speaks to an
:class:`~agentkernel.engine.Engine`, and every failure is one of our SandboxError subclasses
with a one-line message. ``Sandbox`` is assembled from one mixin per area:

- :mod:`.lifecycle`: start, stop, lifeline, adopt, connect, list
- :mod:`.execution`: exec and raw exec streams
- :mod:`.files`: read/write files, upload/download
- :mod:`.resources`: live resize, cgroup limits
- :mod:`.status`: state, ports, uptime

and :mod:`.request` turns its configuration into the engine's create request.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from ..config import SandboxConfig
from ..engine import Engine
from .execution import ExecResult, OutputCallback
from .files import Files
from .lifecycle import Lifecycle
from .request import LABEL, LABEL_OWNER, LABEL_PERSISTENT, LABEL_PROFILE, tmpfs_mb
from .resources import Resources
from .status import SandboxStatus, Status

__all__ = [
    "LABEL",
    "LABEL_OWNER",
    "LABEL_PERSISTENT",
    "LABEL_PROFILE",
    "ExecResult",
    "Sandbox",
    "SandboxStatus",
    "tmpfs_mb",
]


class Sandbox(Lifecycle, Files, Resources, Status):
    """A managed container. ``with Sandbox(image=...) as sb: sb.exec("echo hi")``."""

    @classmethod
    def run(
        cls,
        image: str,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        engine: Engine | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        **config: Any,
    ) -> ExecResult:
        """Run ``cmd`` once in a fresh sandbox of ``image`` and remove it afterwards (a
        persistent one is kept, stopped). ``on_stdout`` / ``on_stderr`` stream the output as
        in :meth:`exec`."""
        config.setdefault("name", f"run-{secrets.token_hex(4)}")
        with cls(SandboxConfig(image=image, **config), engine=engine) as sandbox:
            return sandbox.exec(cmd, timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr)
