"""AgentKernel: run notebook cells inside a managed Docker or Podman sandbox."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext agentkernel``: add the ``%sandbox`` magics to this IPython session."""
    from .extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext agentkernel``: remove the magics and the sandbox (a persistent one stays)."""
    from .extension import unload

    unload(ipython)
