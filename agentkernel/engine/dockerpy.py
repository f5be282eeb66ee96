"""docker-py, imported without its SSH transport until an ssh:// engine needs it.

docker-py's transport package imports its SSH adapter, and with it paramiko, as soon as docker-py
is imported: 0.15-0.2 s of CPU on every kernel's start (half of docker-py's import), for the
few engines reached over ssh://. Here paramiko cannot be imported while docker-py loads, which
docker-py takes as "no SSH support"; :func:`ssh_transport` loads the adapter, and paramiko, for
the first ssh:// client, where docker-py looks for it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from ..errors import EngineUnavailable, one_line


def _without_paramiko() -> ModuleType:
    """``import docker`` while ``import paramiko`` fails (unless paramiko is loaded already)."""
    block = "paramiko" not in sys.modules
    if block:
        sys.modules["paramiko"] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("docker")
    finally:
        if block and sys.modules.get("paramiko", False) is None:
            del sys.modules["paramiko"]


docker = _without_paramiko()
APIError = docker.errors.APIError
DockerException = docker.errors.DockerException
ImageNotFound = docker.errors.ImageNotFound
NotFound = docker.errors.NotFound
TLSConfig = docker.tls.TLSConfig


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


__all__ = ["APIError", "DockerException", "ImageNotFound", "NotFound", "TLSConfig", "docker",
           "ssh_transport"]
