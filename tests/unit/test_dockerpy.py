"""engine.dockerpy: docker-py loads without paramiko, and an ssh:// client still gets it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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
