"""The one exception family of agentkernel, and the one way an error becomes one line.

Every message is a single line that names what was wrong and what is accepted, so callers
(kernel, extension, CLI) can show ``str(err)`` and never a traceback from our code. Engine
backends translate their client library's exceptions into these at their boundary
(``agentkernel.engine.docker.engine_errors``); nothing above the engine sees another kind.
"""

from __future__ import annotations


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line: runs of whitespace (line breaks included) become one space, and
    other control characters are escaped, so a message stays one line whatever it quotes."""
    flat = " ".join(str(text).split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)[:limit]


class SandboxError(Exception):
    """Base class of every error agentkernel raises on purpose."""

    def __init__(self, message: str = "") -> None:
        super().__init__(one_line(message, limit=2000))


class ConfigError(SandboxError, ValueError):
    """A configuration value or spec string is malformed or out of range."""


class CommandError(ConfigError):
    """A malformed ``%sandbox`` command (the message names the problem and the usage)."""


class PolicyRefused(ConfigError):
    """The operator's policy does not allow what was asked (the message names the rule and
    where the operator sets it)."""


class PathRefused(SandboxError, ValueError):
    """A path given to the file API breaks one of the path rules."""


class TooLarge(SandboxError):
    """More bytes than a limit allows (a download, an upload, a read, a pulled value)."""


class EngineUnavailable(SandboxError):
    """No container engine answered, or the engine went away mid-operation."""


class EngineError(SandboxError):
    """The engine answered but refused or failed an operation."""


class ImageNotAvailable(SandboxError):
    """The image is neither present locally nor pullable from its registry."""


class SandboxNotFound(SandboxError):
    """No sandbox with that name exists (or a file inside it does not)."""


class SandboxNotRunning(SandboxError):
    """The sandbox's container is not running (stopped, killed, out of memory...)."""


class SandboxConflict(SandboxError):
    """A sandbox with that name already exists."""


class ExecTimeout(SandboxError):
    """A command ran past its timeout and was killed; ``result`` holds what it printed."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class ResizeFailed(SandboxError):
    """The engine cannot change the limits of a running sandbox (the message says why)."""


class SandboxDied(SandboxError):
    """The sandbox or its runner died; the message says why and how to recover."""


class RunnerGone(SandboxError):
    """The runner exited or broke the protocol; its session cannot be used any more."""


class RunnerError(SandboxError):
    """A runner request failed: it answered with status "error", or (un)pickling failed."""


class RunnerUnsupported(SandboxError):
    """The sandbox cannot run the runner's IPython (Python too old, no IPython to be had)."""
