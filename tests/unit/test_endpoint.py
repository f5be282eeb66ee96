"""Engine endpoints as the docker CLI names them, remote engines, and what they report."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkernel.engine import Endpoint, TLSFiles
from agentkernel.engine.base import PortMapping
from agentkernel.engine.discovery import candidate_endpoints, endpoint_from_env
from agentkernel.errors import ConfigError


@pytest.fixture
def cert_dir(tmp_path: Path) -> Path:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text(name)
    return tmp_path


def test_tls_from_the_docker_cli_variables(cert_dir: Path) -> None:
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(cert_dir)}
    endpoint = endpoint_from_env("tcp://10.1.2.3:2376", env)
    assert endpoint.tls == TLSFiles(str(cert_dir / "ca.pem"), str(cert_dir / "cert.pem"),
                                    str(cert_dir / "key.pem"), verify=True)
    assert endpoint.remote and endpoint.host == "10.1.2.3"
    assert endpoint_from_env(endpoint.url, endpoint.env()) == endpoint  # a child process
    assert Endpoint.from_dict(endpoint.to_dict()) == endpoint
    # DOCKER_TLS: TLS without verifying the engine; an empty DOCKER_TLS_VERIFY means off
    assert endpoint_from_env("tcp://h:2376", {"DOCKER_TLS": "1", "DOCKER_CERT_PATH": str(
        cert_dir)}).tls.verify is False
    assert endpoint_from_env("tcp://h:2375", {"DOCKER_TLS_VERIFY": ""}).tls is None
    assert endpoint_from_env("unix:///var/run/docker.sock", env).tls is None


def test_missing_tls_files_named(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
    with pytest.raises(ConfigError, match="missing cert.pem, key.pem") as info:
        endpoint_from_env("tcp://h:2376", env)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("url, remote", [
    ("unix:///var/run/docker.sock", False), ("tcp://127.0.0.1:2376", True),
    ("ssh://root@build-host", True), ("https://engine.example:2376", True),
])
def test_remote_is_any_scheme_but_a_unix_socket(url: str, remote: bool) -> None:
    assert Endpoint(url).remote is remote


def test_docker_host_with_tls_is_the_candidate(cert_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(cert_dir))
    ((hint, endpoint),) = candidate_endpoints("docker")
    assert hint == "docker" and endpoint.tls is not None and endpoint.tls.verify


def test_ports_of_a_remote_engine_name_its_host() -> None:
    local = PortMapping("127.0.0.1", 32768, 8000, "tcp")
    assert str(local) == "127.0.0.1:32768 -> 8000/tcp"
    everywhere = PortMapping("0.0.0.0", 32768, 8000, "tcp", engine_host="build-host")
    assert everywhere.address == "build-host"
    assert str(everywhere) == "build-host:32768 -> 8000/tcp"
    loopback = PortMapping("127.0.0.1", 32768, 8000, "tcp", engine_host="build-host")
    assert str(loopback) == "127.0.0.1:32768 -> 8000/tcp (on the engine's host build-host)"
