"""Engine helpers for tests: connected engines by kind, labelled containers, tiny images.

Engine kinds under test: ``docker`` and ``podman`` (the local sockets) and ``docker-tls``: the
second dockerd scripts/setup.sh starts on tcp://127.0.0.1:2376 with TLS, reached the way a
remote engine is (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``). A module runs on
``ENGINES`` (docker, podman) unless it names its own list in ``TEST_ENGINES`` (the Sandbox API
adds ``docker-tls``; the gateway tests use one engine); ``AGENTKERNEL_TEST_ENGINES`` (comma list)
chooses the kinds for every module.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tarfile

import pytest

from agentkernel.engine import (
    ContainerSummary,
    Endpoint,
    Engine,
    TLSFiles,
    connect,
    connect_endpoint,
)
from agentkernel.errors import ConfigError, EngineUnavailable
from agentkernel.imagebuild import import_tar
from agentkernel.sandbox import LABEL

RUN_LABEL = "agentkernel.test"
RUN_ID = secrets.token_hex(4)
# Every container made during this run, in this process or in kernels it starts, carries it.
os.environ["AGENTKERNEL_LABELS"] = f"{RUN_LABEL}={RUN_ID}"
# AGENTKERNEL_TEST_RUNTIME=runsc: every sandbox of the run under that OCI runtime (set up by
# `agentkernel runtime setup runsc`), as an operator's `c.SandboxConfig.runtime` would. Podman's
# API cannot choose a runtime per container: its sandboxes come from the Podman service
# scripts/setup.sh starts with that runtime as its default, on PODMAN_RUNTIME_SOCKET.
TEST_RUNTIME = os.environ.get("AGENTKERNEL_TEST_RUNTIME") or None
PODMAN_RUNTIME_SOCKET = f"unix:///run/podman/podman-{TEST_RUNTIME}.sock"
if TEST_RUNTIME:
    os.environ["AGENTKERNEL_RUNTIME"] = TEST_RUNTIME
_CHOSEN = os.getenv("AGENTKERNEL_TEST_ENGINES")
ENGINES = [e.strip() for e in (_CHOSEN or "docker,podman").split(",")]
REMOTE_ENGINES = ["docker-tls"]
TLS_URL = os.environ.get("AGENTKERNEL_TEST_TLS_HOST", "tcp://127.0.0.1:2376")
TLS_CERTS = os.environ.get("AGENTKERNEL_TEST_TLS_CERTS", "/etc/agentkernel/docker-tls/client")
SSH_PORT = int(os.environ.get("AGENTKERNEL_SSH_PORT", "2222"))
_ENGINE_VARS = ("DOCKER_HOST", "CONTAINER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_TLS",
                "DOCKER_CERT_PATH")
_ORIGINAL_ENV = {name: os.environ.get(name) for name in _ENGINE_VARS}
TEST_IMAGE = os.environ.get("AGENTKERNEL_IMAGE") or "agentkernel-test:latest"
_engines: dict[str, Engine] = {}


def engines_for(module: object) -> list[str]:
    """The engine kinds a test module runs on (see the module docstring)."""
    if _CHOSEN:
        return ENGINES
    return list(getattr(module, "TEST_ENGINES", ENGINES))


def tls_endpoint() -> Endpoint:
    """The TLS engine started by scripts/setup.sh."""
    return Endpoint(TLS_URL, TLSFiles.in_folder(TLS_CERTS))


def _set_engine_vars(values: dict[str, str | None]) -> None:
    for var, value in values.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def _runtime_env(name: str) -> dict[str, str | None]:
    """The engine variables of engine ``name`` under AGENTKERNEL_TEST_RUNTIME."""
    return {"CONTAINER_HOST": PODMAN_RUNTIME_SOCKET} if TEST_RUNTIME and name == "podman" else {}


def use_engine(name: str) -> None:
    """Point this process's environment (and so the kernels it starts) at engine ``name``."""
    _set_engine_vars({**_ORIGINAL_ENV, **_runtime_env(name)})
    if name == "docker-tls":
        os.environ.update(tls_endpoint().env())
        os.environ["AGENTKERNEL_ENGINE"] = "docker"
    else:
        os.environ["AGENTKERNEL_ENGINE"] = name


def get_engine(name: str) -> Engine:
    """A connected engine of kind ``name``; fails the test when it does not answer."""
    if name not in _engines:
        try:
            if name == "docker-tls":
                _engines[name] = connect_endpoint("docker", tls_endpoint())
            else:  # the local engine, whichever engine the environment points at now
                now = {var: os.environ.get(var) for var in _ENGINE_VARS}
                _set_engine_vars({**_ORIGINAL_ENV, **_runtime_env(name)})
                try:
                    _engines[name] = connect(name)
                finally:
                    _set_engine_vars(now)
        except (EngineUnavailable, ConfigError) as err:
            pytest.fail(f"{name} engine unavailable (run scripts/setup.sh): {err}", pytrace=False)
    return _engines[name]


def labelled(engine: Engine, name: str) -> list[ContainerSummary]:
    """Containers carrying agentkernel's label for sandbox ``name``."""
    return engine.list_containers([f"{LABEL}={name}"], all=True)


def busybox_image(engine: Engine, tag: str) -> None:
    """Import an image holding only a static busybox: a shell and tools, but no python3."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is installed by scripts/setup.sh"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for tool in ("sh", "cat", "mkdir", "rm", "test", "grep", "tr", "kill", "dirname", "chmod",
                     "stat", "echo", "sleep"):
            link = tarfile.TarInfo(f"bin/{tool}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    import_tar(engine, [buf.getvalue()], tag, changes=())
