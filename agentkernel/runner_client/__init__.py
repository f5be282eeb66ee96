"""Host side of the runner protocol (docs/ARCHITECTURE.md, "Runner protocol").

One module per job, in the order a runner meets them:

- :mod:`.command`: what starts the runner in a sandbox (its source, its command lines);
- :mod:`.launch`: :func:`launch_runner` starts it (or takes the container's main process) and
  reads its ``ready`` frame;
- :mod:`.transport`: the byte pipe to it (``RunnerTransport``; a local subprocess for tests);
- :mod:`.connection`: the frames both ways, a writer and a reader thread, each frame routed to
  its request's inbox (:mod:`.inbox`: bounded, the host's back-pressure);
- :mod:`.session`: :class:`RunnerSession`, the requests (execute, comms, complete, inspect,
  is_complete, push, pull, interrupt).

The names other modules use are exported here.
"""

from __future__ import annotations

from .command import (
    BUNDLE_MOUNT,
    EXITED_FORMAT,
    RUNNER_MODULES,
    runner_command,
    runner_main_command,
    runner_source,
)
from .inbox import INBOX_LIMIT, STREAM_MERGE_LIMIT
from .launch import READY_TIMEOUT, launch_runner
from .session import RunnerSession
from .transport import LocalProcessTransport, RunnerTransport

__all__ = [
    "BUNDLE_MOUNT",
    "EXITED_FORMAT",
    "INBOX_LIMIT",
    "READY_TIMEOUT",
    "RUNNER_MODULES",
    "STREAM_MERGE_LIMIT",
    "LocalProcessTransport",
    "RunnerSession",
    "RunnerTransport",
    "launch_runner",
    "runner_command",
    "runner_main_command",
    "runner_source",
]
