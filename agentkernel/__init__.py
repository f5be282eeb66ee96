"""AgentKernel: run notebook cells inside a managed Docker or Podman sandbox."""

from __future__ import annotations

__version__ = "0.1.0"
