"""An engine connected on first use.

A kernel handed a warm sandbox needs nothing from the engine before its first reply: the
runner's stream and the lifeline are inherited sockets. Connecting (importing docker-py, about
0.4 s of CPU, and a probe) is left to the first call that needs the engine, or to
:meth:`DeferredEngine.warm_up` once the kernel has answered.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from .base import Engine, ExecStream
from .discovery import Endpoint
from .execstream import DockerExecStream

# Backends whose exec streams are Docker API streams, adoptable without a connection.
DOCKER_API_KINDS = ("docker", "podman")


class DeferredEngine:
    """Stands for the ``kind`` engine at ``endpoint``; any use but the few below connects
    (once, thread-safe) and is handed to the connected engine."""

    def __init__(self, kind: str, endpoint: Endpoint) -> None:
        self.kind = kind
        self.base_url = endpoint.url
        self._endpoint = endpoint
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def remote(self) -> bool:
        return self._endpoint.remote

    def connected(self) -> Engine:
        """The engine, connected now if it was not yet (EngineUnavailable if it does not
        answer; the next use tries again)."""
        with self._lock:
            if self._engine is None:
                from . import connect_endpoint

                self._engine = connect_endpoint(self.kind, self._endpoint)
            return self._engine

    def warm_up(self) -> None:
        """Connect in a background thread, so a later call finds the engine ready."""
        def connect_quietly() -> None:
            try:
                self.connected()
            except Exception:  # the call that needs the engine reports it
                pass

        threading.Thread(target=connect_quietly, name="agentkernel-engine-connect",
                         daemon=True).start()

    def adopt_exec(self, exec_id: str | None, fd: int) -> ExecStream:
        """The running exec whose stream another process handed over as ``fd``."""
        if self.kind not in DOCKER_API_KINDS:
            return self.connected().adopt_exec(exec_id, fd)
        return DockerExecStream(_DeferredApi(self), exec_id, socket.socket(fileno=fd))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connected(), name)

    def __repr__(self) -> str:
        state = "connected" if self._engine is not None else "not connected yet"
        return f"<DeferredEngine {self.kind} {self.base_url} ({state})>"


class _DeferredApi:
    """The Docker API client of a deferred engine, connected when first used."""

    def __init__(self, engine: DeferredEngine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine.connected().api, name)
