"""engine.dockerpy: docker-py loads without paramiko, and an ssh:// client still gets it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_the_docker_backend_loads_without_paramiko() -> None:
    result = run_python("""
        import sys
        from agentkernel.engine import load_backend
        load_backend("docker")
        import docker
        print("docker" in sys.modules, "paramiko" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


def test_paramiko_stays_importable_by_others() -> None:
    result = run_python("""
        import agentkernel.engine.docker
        import paramiko
        print(paramiko.SSHClient.__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SSHClient"


def test_an_ssh_client_loads_the_ssh_transport() -> None:
    """docker-py tries to reach the SSH server (nothing listens on port 1 of loopback): the
    error is paramiko's, not docker-py's "Install paramiko package"."""
    result = run_python("""
        import sys
        from agentkernel.engine import Endpoint
        from agentkernel.engine.docker import new_client
        try:
            new_client(Endpoint("ssh://nobody@127.0.0.1:1"), 2)
        except Exception as err:
            print(type(err).__module__, "|", err)
        print("paramiko" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr
    first, loaded = result.stdout.strip().splitlines()
    assert first.startswith("paramiko") and "Install paramiko" not in first, first
    assert loaded == "True"


def test_the_installed_docker_py_has_what_we_rely_on() -> None:
    from agentkernel.engine import dockerpy

    found = dockerpy.problems()
    assert not found, f"docker-py {metadata.version('docker')} broke agentkernel: {found}"


def test_a_breaking_docker_py_fails_at_import_with_its_version() -> None:
    """docker-py whose client no longer returns the response's SocketIO through
    _get_raw_response_socket: one line at import, naming the version."""
    result = run_python("""
        import docker
        del docker.APIClient._get_raw_response_socket
        import agentkernel.engine.dockerpy
    """)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"ImportError: agentkernel does not support docker-py {metadata.version('docker')}: "
        "APIClient._get_raw_response_socket is missing"), result.stderr


def test_docker_py_that_needs_paramiko_to_load_is_named(tmp_path) -> None:
    """A docker-py whose import needs paramiko (a stand-in package first on sys.path)."""
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "__init__.py").write_text("import paramiko\n")
    result = run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import agentkernel.engine.dockerpy
    """)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: agentkernel does not support docker-py "), last
    assert last.endswith("it does not load without paramiko (import of paramiko halted; None "
                         "in sys.modules)"), last


def test_the_socket_behind_a_hijacked_unix_connection() -> None:
    import socket

    from agentkernel.engine.dockerpy import hijacked_socket

    left, right = socket.socketpair()
    try:
        left.settimeout(3)
        wrapped = socket.SocketIO(left, "rwb")
        assert hijacked_socket(wrapped) is left and left.gettimeout() is None
        assert hijacked_socket(right) is right
    finally:
        left.close()
        right.close()
