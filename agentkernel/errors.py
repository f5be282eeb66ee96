"""The one exception family of agentkernel.

Every message is a single line that names what was wrong and what is accepted, so callers
(kernel, extension, CLI) can show ``str(err)`` and never a traceback from our code.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error agentkernel raises on purpose."""


class ConfigError(SandboxError, ValueError):
    """A configuration value or spec string is malformed or out of range."""


class EngineUnavailable(SandboxError):
    """No container engine answered, or the engine went away mid-operation."""


class ImageNotAvailable(SandboxError):
    """The image is neither present locally nor pullable from its registry."""


class PathRefused(SandboxError, ValueError):
    """A path given to the file API breaks one of the path rules."""


class SandboxNotFound(SandboxError):
    """No sandbox with that name exists (or a file inside it does not)."""


class SandboxNotRunning(SandboxError):
    """The sandbox's container is not running (stopped, killed, out of memory...)."""


class SandboxConflict(SandboxError):
    """A sandbox with that name already exists."""


class ExecTimeout(SandboxError):
    """A command ran past its timeout and was killed."""
