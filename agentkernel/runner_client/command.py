"""What starts the runner in a sandbox: its source and its command lines.

The runner is sent, not installed: ``python3 -u -c SOURCE [BUNDLE]``, where SOURCE is
``runner/boot.py`` followed by a call that loads the runner's modules (:data:`RUNNER_MODULES`)
from their sources (docs/ARCHITECTURE.md, "Runner protocol"). :func:`runner_main_command` runs
it as the container's main process, which ends the stream with an ``exited`` frame.
"""

from __future__ import annotations

import functools
from importlib import resources

from ..sandbox.bundle_volume import MOUNT as BUNDLE_MOUNT
from ..sandbox.request import HOLD_SCRIPT

RUNNER_MODULES = ("protocol", "pump", "ipython_path", "kernel_api", "shell", "comms",
                  "introspection", "runner", "ipython_compat", "lazy_terminal")
# The ``exited`` frame the container's main process writes once the runner it ran has ended,
# as a printf format: "%3d" prints an exit status (0-255) in as many characters as it takes.
EXITED_FORMAT = '{"type":"exited","code":%3d}'


def runner_command(bundle: str | None = BUNDLE_MOUNT) -> list[str]:
    """The argv that starts the runner inside a sandbox, with agentkernel's IPython (if the
    sandbox has it mounted) at ``bundle``."""
    return ["python3", "-u", "-c", runner_source(), *([bundle] if bundle else [])]


def runner_main_command(bundle: str | None = BUNDLE_MOUNT) -> list[str]:
    """The container's main process when it runs the runner (``Sandbox.start(main=...)``):
    the runner on the container's stdin and stdout (no exec to wait for); once the runner has
    ended, an ``exited`` frame with its exit status (the stream cannot end: its connection is
    the lifeline), then the lifeline's wait for EOF, so that the container outlives its runner
    and the host can find out inside it why the runner died."""
    header = "".join(f"\\{byte:03o}" for byte in len(EXITED_FORMAT).to_bytes(4, "big"))
    script = f'"$@"; printf \'{header}{EXITED_FORMAT}\' "$?"; {HOLD_SCRIPT}'
    return ["/bin/sh", "-c", script, "agentkernel-runner", *runner_command(bundle)]


@functools.cache
def runner_source() -> str:
    """The source passed to ``python3 -u -c``: ``runner/boot.py``, then a call that loads the
    runner's modules from their sources (one argument; Linux caps it at 128 KiB)."""
    package = resources.files("agentkernel.runner")
    sources = {name: package.joinpath(f"{name}.py").read_text("utf-8")
               for name in RUNNER_MODULES}
    sources["__init__"] = ""
    boot = package.joinpath("boot.py").read_text("utf-8")
    return f"{boot}\nboot({sources!r})\n"
