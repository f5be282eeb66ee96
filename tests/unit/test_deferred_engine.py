"""engine.deferred: a kernel given a warm sandbox reaches its first reply without docker-py."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_an_adopted_exec_stream_needs_no_engine_client() -> None:
    result = run_python("""
        import socket, sys
        from agentkernel.engine import Endpoint
        from agentkernel.engine.deferred import DeferredEngine
        ours, theirs = socket.socketpair()
        engine = DeferredEngine("docker", Endpoint("unix:///nonexistent/engine.sock"))
        stream = engine.adopt_exec("0123456789ab", theirs.detach())
        ours.sendall(bytes([1, 0, 0, 0, 0, 0, 0, 2]) + b"hi")
        ours.close()
        assert stream.read() == b"hi" and stream.read() == b""
        assert engine.kind == "docker" and not engine.remote
        print("docker" in sys.modules, "requests" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_first_use_connects_and_names_the_engine_that_does_not_answer() -> None:
    result = run_python("""
        from agentkernel.engine import Endpoint
        from agentkernel.engine.deferred import DeferredEngine
        from agentkernel.errors import EngineUnavailable
        engine = DeferredEngine("docker", Endpoint("unix:///nonexistent/engine.sock"))
        for _ in range(2):  # a failed connection is tried again on the next use
            try:
                engine.ncpu
            except EngineUnavailable as err:
                print(err)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all("the docker engine at unix:///nonexistent/engine.sock does not answer" in line
               for line in lines)
