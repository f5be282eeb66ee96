"""docker-py, imported without its SSH transport until an ssh:// engine needs it; and every
name of docker-py's that it keeps private, in one place, checked when it loads.

docker-py's transport package imports its SSH adapter, and with it paramiko, as soon as docker-py
is imported: 0.15-0.2 s of CPU on every kernel's start (half of docker-py's import), for the
few engines reached over ssh://. Here paramiko cannot be imported while docker-py loads, which
docker-py takes as "no SSH support" (``docker.transport.SSHHTTPAdapter`` left unset);
:func:`ssh_transport` loads the adapter, and paramiko, for the first ssh:// client, where
docker-py's client looks for it (``docker.api.client.SSHHTTPAdapter``).

docker-py's ``attach_socket`` and ``exec_start(socket=True)`` hand out, on a unix socket, the
``socket.SocketIO`` of the response (``APIClient._get_raw_response_socket``);
:func:`hijacked_socket` takes the socket out of it.

At import, :func:`problems` checks those names and an ImportError names docker-py's version and
what changed (tests/unit/test_dockerpy.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import socket
import sys
from importlib import metadata
from types import ModuleType
from typing import Any

from ..errors import EngineUnavailable, one_line


def _version() -> str:
    """docker-py's version, for the errors that name it (asked only then: 5 ms)."""
    try:
        return metadata.version("docker")
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def _without_paramiko() -> ModuleType:
    """``import docker`` while ``import paramiko`` fails (unless paramiko is loaded already)."""
    block = "paramiko" not in sys.modules
    if block:
        sys.modules["paramiko"] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("docker")
    except ImportError as err:  # docker-py no longer loads without its SSH transport
        raise ImportError(f"agentkernel does not support docker-py {_version()}: it does not "
                          f"load without paramiko ({one_line(err)})") from None
    finally:
        if block and sys.modules.get("paramiko", False) is None:
            del sys.modules["paramiko"]


docker = _without_paramiko()
APIError = docker.errors.APIError
DockerException = docker.errors.DockerException
ImageNotFound = docker.errors.ImageNotFound
NotFound = docker.errors.NotFound
TLSConfig = docker.tls.TLSConfig


def problems() -> list[str]:
    """What differs from the private names we rely on, in this docker-py (empty: nothing)."""
    found = []
    if importlib.util.find_spec("docker.transport.sshconn") is None:
        found.append("docker.transport.sshconn is missing")
    if "SSHHTTPAdapter" not in docker.APIClient.__init__.__code__.co_names:
        found.append("APIClient() no longer looks up docker.api.client.SSHHTTPAdapter")
    raw = inspect.getattr_static(docker.APIClient, "_get_raw_response_socket", None)
    if not callable(raw):
        found.append("APIClient._get_raw_response_socket is missing")
    elif list(inspect.signature(raw).parameters) != ["self", "response"]:
        found.append(f"APIClient._get_raw_response_socket{inspect.signature(raw)} is not "
                     "(self, response)")
    return found


def check() -> None:
    """ImportError naming docker-py's version and what changed, if anything did."""
    found = problems()
    if found:
        raise ImportError(f"agentkernel does not support docker-py {_version()}: "
                          + "; ".join(found))


check()


def hijacked_socket(hijacked: Any) -> socket.socket:
    """The socket behind a connection docker-py hijacked (the ``socket.SocketIO`` it hands out
    on a unix socket, or a socket), blocking."""
    sock = hijacked._sock if isinstance(hijacked, socket.SocketIO) else hijacked
    sock.settimeout(None)
    return sock


def ssh_transport() -> None:
    """Load docker-py's SSH adapter (and paramiko) where its client looks for it."""
    client_module = importlib.import_module("docker.api.client")
    if getattr(client_module, "SSHHTTPAdapter", None) is not None:
        return
    try:
        adapter = importlib.import_module("docker.transport.sshconn").SSHHTTPAdapter
    except ImportError as err:
        raise EngineUnavailable(f"ssh:// engines need paramiko ({one_line(err)})") from None
    docker.transport.SSHHTTPAdapter = adapter
    client_module.SSHHTTPAdapter = adapter


__all__ = ["APIError", "DockerException", "ImageNotFound", "NotFound", "TLSConfig",
           "docker", "hijacked_socket", "ssh_transport"]
