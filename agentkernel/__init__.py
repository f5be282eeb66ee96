"""AgentKernel: run notebook cells inside a managed Docker or Podman sandbox.

``from agentkernel import Sandbox, SandboxConfig`` for the API; ``%load_ext agentkernel`` for the
IPython extension. Names are imported on first use, so ``import agentkernel`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Sandbox": "agentkernel.sandbox",
    "ExecResult": "agentkernel.sandbox",
    "SandboxStatus": "agentkernel.sandbox",
    "SandboxConfig": "agentkernel.config",
    "PortMapping": "agentkernel.engine.base",
    "SandboxError": "agentkernel.errors",
    "ConfigError": "agentkernel.errors",
    "EngineUnavailable": "agentkernel.errors",
    "ImageNotAvailable": "agentkernel.errors",
    "ExecTimeout": "agentkernel.errors",
    "ResizeFailed": "agentkernel.errors",
}
__all__ = sorted([*_EXPORTS, "load_ipython_extension", "unload_ipython_extension"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agentkernel' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext agentkernel``: add the ``%sandbox`` magics to this IPython session."""
    from .extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext agentkernel``: remove the magics and the sandbox (a persistent one stays)."""
    from .extension import unload

    unload(ipython)
