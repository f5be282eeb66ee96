"""Starting the runner in a sandbox and reading its ``ready`` frame.

:func:`launch_runner` takes the runner the container's start ran as its main process, or
starts one in an exec, and reads exactly its first frame: ``ready``, or why it cannot run
(``fatal``: RunnerUnsupported; no frame: SandboxError naming the likely cause).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import RunnerUnsupported, SandboxError, one_line
from ..runner.protocol import FrameDecoder, ProtocolError
from .command import runner_command

if TYPE_CHECKING:
    from ..engine import ExecStream
    from ..sandbox import Sandbox

READY_TIMEOUT = 60.0  # seconds a runner may take to say it is ready


def launch_runner(sandbox: Sandbox, timeout: float = READY_TIMEOUT) -> tuple[ExecStream, dict]:
    """Start the runner in ``sandbox`` (or take the one its start ran as the container's main
    process, ``runner_main_command``); return its stream and its ``ready`` frame.

    Exactly the ready frame is read, nothing after it, so the stream can be handed to another
    process (the warm pool) or to a RunnerSession. SandboxError says why the runner did not
    come up (no python3 in the image, most often).
    """
    stream = sandbox.take_main_stream() or sandbox.open_exec(
        runner_command(), workdir=sandbox.effective.workdir)
    try:
        return stream, _read_ready(stream, timeout)
    except RunnerUnsupported:
        stream.close()
        raise
    except (ProtocolError, OSError) as err:
        stream.close()
        raise SandboxError(_no_runner_reason(sandbox, str(err))) from None


def _read_ready(stream: ExecStream, timeout: float) -> dict:
    """Read up to and including the ``ready`` frame; anything after it would be lost."""
    decoder = FrameDecoder()
    stream.set_timeout(timeout)
    try:
        while True:
            data = stream.read()
            if not data:
                raise ProtocolError(f"the runner exited: {one_line(stream.stderr_tail())}")
            for frame in decoder.feed(data):
                if frame.get("type") == "fatal":
                    raise RunnerUnsupported(one_line(str(frame.get("message"))))
                if frame.get("type") == "exited":
                    raise ProtocolError(f"the runner exited with code {frame.get('code')}: "
                                        f"{one_line(stream.stderr_tail())}")
                if frame.get("type") == "ready":
                    if decoder.pending() or stream.pending():
                        raise ProtocolError("the runner sent more than its ready frame")
                    return frame
    except TimeoutError:
        raise ProtocolError(f"the runner did not start within {timeout:g} s") from None
    finally:
        stream.set_timeout(None)


def _no_runner_reason(sandbox: Sandbox, detail: str) -> str:
    has_python = sandbox.exec("command -v python3").ok if sandbox.is_running else True
    if not has_python:
        return (
            f"image {sandbox.effective.image!r} has no python3: AgentKernel runs cells with "
            "the image's python3 (3.10 or newer); use a Python image such as "
            "python:3.12-slim, or install python3 in yours"
        )
    return f"the runner did not start in sandbox {sandbox.name}: {detail}"
