"""Remote engines: what differs from a local socket (docs/scale-out.md).

The TLS engine (``docker-tls``: a second dockerd on tcp://127.0.0.1:2376 with certificates made
by scripts/setup.sh) stands for an engine on another machine; ``ssh://root@127.0.0.1:2222``
reaches the main Docker through the sshd the set-up starts. The Sandbox API's own tests also run
on ``docker-tls`` (test_sandbox.py), the warm pool's too (test_pool.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.engines import REMOTE_ENGINES, SSH_PORT, get_engine, tls_endpoint
from helpers.kernels import execute, running_kernel, wait_until

from agentkernel.engine import Endpoint, Engine, connect_endpoint
from agentkernel.errors import ConfigError
from agentkernel.sandbox import LABEL, Sandbox

pytestmark = pytest.mark.engine
TEST_ENGINES = REMOTE_ENGINES
SSH_URL = f"ssh://root@127.0.0.1:{SSH_PORT}"
GONE_TIMEOUT = 15.0


def running_ids(engine: Engine) -> set[str]:
    return {c.id for c in engine.list_containers([LABEL])}


def test_sigkilled_kernel_takes_its_remote_sandbox(engine_name: str, engine: Engine,
                                                   test_image: str, kernelspec: None) -> None:
    """The stdin lifeline holds over TLS: the kernel's death closes the connection."""
    assert engine.remote and os.environ["DOCKER_HOST"] == engine.base_url
    with running_kernel() as (km, kc):
        hostname = execute(kc, "import socket; print(socket.gethostname())").stream().strip()
        ours = [cid for cid in running_ids(engine) if cid.startswith(hostname)]
        assert len(ours) == 1, f"no sandbox {hostname} on the TLS engine"
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        took = wait_until(lambda: ours[0] not in running_ids(engine), GONE_TIMEOUT,
                          "the SIGKILLed kernel's sandbox removed")
    print(f"sandbox gone {took:.2f} s after SIGKILL")


STOP_LIFELINE = (
    "import os, signal\n"
    "for pid in os.listdir('/proc'):\n"
    "    if not pid.isdigit() or int(pid) == os.getpid():\n        continue\n"
    "    try:\n        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
    "    except OSError:\n        continue\n"
    "    if b'while read' in cmd and pid != '1':\n"
    "        os.kill(int(pid), signal.SIGSTOP); print('stopped', pid)\n"
)


def test_the_reaper_reaches_a_remote_engine(engine_name: str, engine: Engine, test_image: str,
                                            kernelspec: None) -> None:
    """With the container's own lifeline stopped, the host-side reaper removes the sandbox of
    a SIGKILLed kernel, reaching the engine the way the kernel did (Engine.endpoint: TLS)."""
    with running_kernel() as (km, kc):
        hostname = execute(kc, "import socket; print(socket.gethostname())").stream().strip()
        assert "stopped" in execute(kc, STOP_LIFELINE).stream()
        (ours,) = [cid for cid in running_ids(engine) if cid.startswith(hostname)]
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        wait_until(lambda: engine.inspect_container(ours) is None, GONE_TIMEOUT,
                   "the reaper removed the sandbox")


def test_ports_name_the_engine_host(engine: Engine, test_image: str) -> None:
    """A remote engine serves published ports on its own host (the one its URL names)."""
    with Sandbox(image=test_image, ports=["8000"], engine=engine) as sb:
        (mapping,) = sb.ports
        assert (mapping.host_ip, mapping.engine_host) == ("127.0.0.1", "127.0.0.1")
        assert f"127.0.0.1:{mapping.host_port} -> 8000/tcp" in str(sb.status())


def test_another_process_reaches_the_same_engine(engine: Engine, test_image: str) -> None:
    """Engine.endpoint() describes the engine for a process started elsewhere: as JSON, or as
    the docker CLI's variables."""
    code = ("import json, sys; from agentkernel.engine import Endpoint, connect, "
            "connect_endpoint; e = connect_endpoint('docker', Endpoint.from_dict("
            "json.loads(sys.argv[1]))) if sys.argv[1] != '-' else connect('docker'); "
            "print(json.dumps([e.endpoint().to_dict(), [c.id for c in e.list_containers("
            "['agentkernel.sandbox'])]]))")
    with Sandbox(image=test_image, engine=engine) as sb:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        for argument, env in ((json.dumps(engine.endpoint().to_dict()), clean),
                              ("-", {**clean, **engine.endpoint().env()})):
            answer = subprocess.run([sys.executable, "-c", code, argument], env=env,
                                    capture_output=True, text=True, timeout=60, check=True)
            endpoint, ids = json.loads(answer.stdout)
            assert Endpoint.from_dict(endpoint) == engine.endpoint() == tls_endpoint()
            assert sb.container_id in ids


# -- ssh:// ------------------------------------------------------------------------------------
@pytest.fixture
def ssh_engine() -> Iterator[Engine]:
    engine = connect_endpoint("docker", Endpoint(SSH_URL))
    yield engine
    engine.close()


HOLDER = """
import sys, time
from agentkernel.engine import Endpoint, connect_endpoint
from agentkernel.sandbox import Sandbox
sb = Sandbox(image=sys.argv[2], engine=connect_endpoint("docker", Endpoint(sys.argv[1]))).start()
print(sb.container_id, flush=True)
time.sleep(600)
"""


def test_ssh_engine_runs_sandboxes(ssh_engine: Engine, test_image: str, tmp_path: Path) -> None:
    """docker-py over paramiko to the main Docker through the sshd on 127.0.0.1: exec with
    stdin, files, ports, the mount refusal, and the lifeline of a SIGKILLed owner."""
    local = get_engine("docker")
    assert ssh_engine.remote and ssh_engine.endpoint().host == "127.0.0.1"
    with Sandbox(image=test_image, ports=["8000"], engine=ssh_engine) as sb:
        assert sb.exec("cat; echo done", stdin=b"x" * 100_000).stdout == "x" * 100_000 + "done\n"
        sb.write_file("/tmp/blob", bytes(range(256)) * 1000)
        assert sb.read_file("/tmp/blob") == bytes(range(256)) * 1000
        assert sb.ports[0].engine_host == "127.0.0.1"
        assert sb.container_id in running_ids(local)
    with pytest.raises(ConfigError, match="is remote"):
        Sandbox(image=test_image, mount_cwd=True, work_dir=str(tmp_path),
                engine=ssh_engine).start()

    for stop_lifeline in (False, True):  # the lifeline, then the reaper over ssh
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, SSH_URL, test_image],
                                  stdout=subprocess.PIPE, text=True)
        try:
            container = holder.stdout.readline().strip()
            assert container in running_ids(local)
            if stop_lifeline:
                stream = local.open_exec(container, ["python3", "-c", STOP_LIFELINE],
                                         stdin=False)
                assert b"stopped" in stream.read()
                stream.close()
            holder.kill()
            wait_until(lambda container=container: local.inspect_container(container) is None,
                       GONE_TIMEOUT, "the sandbox of a SIGKILLed owner over ssh:// removed")
        finally:
            holder.kill()
            holder.wait()
