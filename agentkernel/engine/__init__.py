"""Container engines: find one, connect to it, and the backend that speaks its API.

``connect()`` tries the addresses :mod:`.discovery` lists and returns the backend for the
kind of engine that answered. Backends are looked up by kind in the ``agentkernel.engines``
entry points, so another one (a remote service, Kubernetes) is one module of its own that
implements :class:`.base.Engine` and names itself there.
"""

from __future__ import annotations

import importlib

from ..errors import EngineUnavailable
from .base import (
    ContainerGone,
    ContainerInfo,
    ContainerSummary,
    Engine,
    ExecStream,
    VolumeSummary,
)
from .discovery import (
    ENGINE_KINDS,
    START_HINT,
    Endpoint,
    TLSFiles,
    candidate_endpoints,
    requested_kind,
)

__all__ = [
    "ENGINE_KINDS",
    "ContainerGone",
    "ContainerInfo",
    "ContainerSummary",
    "Endpoint",
    "Engine",
    "ExecStream",
    "VolumeSummary",
    "backend",
    "TLSFiles",
    "connect",
    "connect_endpoint",
    "connect_url",
    "load_backend",
]
ENTRY_POINT_GROUP = "agentkernel.engines"
BUILTIN_BACKENDS = {
    "docker": "agentkernel.engine.docker:DockerEngine",
    "podman": "agentkernel.engine.podman:PodmanEngine",
}


def backend(kind: str) -> type[Engine]:
    """The Engine class for ``kind``: a built-in one, else an ``agentkernel.engines`` entry
    point of that name."""
    if kind in BUILTIN_BACKENDS:
        module, _, name = BUILTIN_BACKENDS[kind].partition(":")
        return getattr(importlib.import_module(module), name)
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        return point.load()
    raise EngineUnavailable(f"no engine backend named {kind!r} (built in: "
                            f"{', '.join(BUILTIN_BACKENDS)})")


def load_backend(kind: str | None = None) -> type[Engine]:
    """Import the backend that ``connect(kind)`` tries first: its client library (docker-py,
    about 0.4 s of CPU) is most of what connecting costs."""
    kind = requested_kind(kind)
    return backend("docker" if kind == "auto" else kind)


def connect_endpoint(kind: str, endpoint: Endpoint, timeout: float = 5.0) -> Engine:
    """Connect to the engine at ``endpoint`` (known to be of ``kind``), e.g. one another
    process described with :meth:`Engine.endpoint`."""
    try:
        return backend(kind).connect(endpoint, timeout)
    except EngineUnavailable as err:
        raise EngineUnavailable(f"the {kind} engine at {endpoint} does not answer ({err})"
                                ) from None


def connect_url(kind: str, base_url: str, timeout: float = 5.0) -> Engine:
    """Connect to the engine at ``base_url`` (known to be of ``kind``; no TLS)."""
    return connect_endpoint(kind, Endpoint(base_url), timeout)


def connect(kind: str | None = None, timeout: float = 5.0) -> Engine:
    """Connect to the engine ``kind`` (default: AGENTKERNEL_ENGINE, else auto)."""
    kind = requested_kind(kind)
    tried = []
    for hint, endpoint in candidate_endpoints(kind):
        try:
            engine = backend("docker" if hint == "auto" else hint).connect(endpoint, timeout)
        except EngineUnavailable as err:
            tried.append(f"{hint} at {endpoint} ({err})")
            continue
        if kind != "auto" and engine.kind != kind:
            tried.append(f"{hint} at {endpoint} (answers as {engine.kind})")
            engine.close()
            continue
        return engine
    raise EngineUnavailable(f"no container engine answered: tried {'; '.join(tried)}; {START_HINT}")
