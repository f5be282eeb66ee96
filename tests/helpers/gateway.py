"""Jupyter Enterprise Gateway for tests and benchmarks: start one on 127.0.0.1 with our
kernelspecs, and drive kernels through it (its REST API and kernel websocket), as JupyterLab's
``--gateway-url`` does.

Enterprise Gateway lives in its own venv (``.venv-gateway``, made by scripts/setup-scaleout.sh):
it pins old jupyter_server and jupyter_client. Two kernelspecs go into its kernels path, both
running our main venv's python:

- ``agentkernel``: our ordinary kernelspec, launched by the gateway's LocalProcessProxy;
- ``agentkernel-distributed``: placed by its DistributedProcessProxy on 127.0.0.1 or
  127.0.0.2 (both this machine: 127.0.0.1 is launched locally, 127.0.0.2 over SSH on
  ``AGENTKERNEL_SSH_PORT``), started by ``agentkernel_kernel.gateway_launcher``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

from helpers.engines import SSH_PORT
from helpers.kernels import Run

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_VENV = Path(os.environ.get("AGENTKERNEL_GATEWAY_VENV") or ROOT / ".venv-gateway")
GATEWAY_BIN = GATEWAY_VENV / "bin" / "jupyter-enterprisegateway"
LOCAL_SPEC = "agentkernel"
DISTRIBUTED_SPEC = "agentkernel-distributed"
DISTRIBUTED_NAME = "AgentKernel Sandbox (distributed)"
REMOTE_HOSTS = ("127.0.0.1", "127.0.0.2")
# What the gateway passes from its own environment to kernels (EG_INHERITED_ENVS): the code
# under test, the image, the run's labels and the engine.
INHERITED = ("PYTHONPATH", "AGENTKERNEL_IMAGE", "AGENTKERNEL_LABELS", "AGENTKERNEL_ENGINE",
             "AGENTKERNEL_EAGER_START", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_gateway_kernelspecs(prefix: Path, hosts: Sequence[str] = REMOTE_HOSTS) -> Path:
    """Our two kernelspecs under ``prefix``; returns the Jupyter data dir holding them."""
    from agentkernel_kernel.kernelspec import install

    install(prefix=str(prefix), kernel_name=LOCAL_SPEC)
    install(prefix=str(prefix), kernel_name=DISTRIBUTED_SPEC, remote_hosts=list(hosts),
            display_name=DISTRIBUTED_NAME)
    return prefix / "share" / "jupyter"


@dataclass
class Gateway:
    """A running Enterprise Gateway."""

    url: str
    process: subprocess.Popen
    log_path: Path
    kernels_started: list[str] = field(default_factory=list)
    token: str = ""  # EG_AUTH_TOKEN, sent as `Authorization: token ...` when set

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float = 180) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **self.headers()})
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def start_kernel(self, name: str = LOCAL_SPEC, env: dict[str, str] | None = None,
                     timeout: float = 180) -> str:
        """A new kernel's id (the gateway answers once the kernel is up)."""
        kernel = self.request("POST", "/api/kernels", {"name": name, "env": env or {}},
                              timeout=timeout)
        self.kernels_started.append(kernel["id"])
        return kernel["id"]

    def kernel_ids(self) -> list[str]:
        return [k["id"] for k in self.request("GET", "/api/kernels")]

    def connect(self, kernel_id: str) -> GatewayKernel:
        return GatewayKernel(self, kernel_id)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM, as an operator stops it; the gateway shuts its kernels down first."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def running_gateway(workdir: Path, *, cull_idle_s: int = 0, hosts: Sequence[str] = REMOTE_HOSTS,
                    env: dict[str, str] | None = None,
                    extra_args: Sequence[str] = ()) -> Iterator[Gateway]:
    """Enterprise Gateway on a free port of 127.0.0.1 with our kernelspecs; stopped after."""
    assert GATEWAY_BIN.exists(), f"{GATEWAY_BIN} missing: run scripts/setup.sh"
    data = install_gateway_kernelspecs(workdir / "prefix", hosts)
    port = free_port()
    log_path = workdir / "gateway.log"
    gateway_env = {
        **os.environ,
        "JUPYTER_PATH": str(data),
        "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
        "EG_RESPONSE_IP": "127.0.0.1",       # launchers answer on loopback
        "EG_RESPONSE_PORT": str(free_port()),
        "EG_SSH_PORT": str(SSH_PORT),
        "EG_KERNEL_LOG_DIR": str(workdir),
        "EG_INHERITED_ENVS": ",".join(INHERITED),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":"),
        **(env or {}),
    }
    args = [str(GATEWAY_BIN), "--EnterpriseGatewayApp.ip=127.0.0.1",
            f"--EnterpriseGatewayApp.port={port}", "--EnterpriseGatewayApp.port_retries=0",
            f"--EnterpriseGatewayApp.remote_hosts={list(hosts)}",
            "--MappingKernelManager.cull_connected=True",
            # tests run as root, which the gateway refuses by default
            "--EnterpriseGatewayApp.unauthorized_users=nobody",
            "--EnterpriseGatewayApp.list_kernels=True",
            # jupyter_server 1.x (the gateway's) makes a websocket wait this long for a
            # kernel_info reply that an earlier, already closed websocket asked for (JupyterLab
            # opens one and closes it at once): see docs/scale-out.md
            "--MappingKernelManager.kernel_info_timeout=5"]
    if cull_idle_s:
        args += [f"--MappingKernelManager.cull_idle_timeout={cull_idle_s}",
                 "--MappingKernelManager.cull_interval=1"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*args, *extra_args], env=gateway_env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=workdir)
    gateway = Gateway(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_answering(gateway)
        yield gateway
    finally:
        gateway.stop()


def _wait_answering(gateway: Gateway, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise AssertionError(f"the gateway exited: {gateway.log()[-2000:]}")
        try:
            gateway.request("GET", "/api", timeout=2)
            return
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    raise AssertionError(f"the gateway did not answer within {timeout} s: {gateway.log()[-2000:]}")


class GatewayKernel:
    """A kernel's channels through the gateway's websocket (Jupyter messages as JSON)."""

    def __init__(self, gateway: Gateway, kernel_id: str, timeout: float = 60):
        self.gateway, self.id = gateway, kernel_id
        self.session = uuid.uuid4().hex
        # ACK at once instead of delaying: the gateway's websocket writes wait for ACKs
        # (Nagle, no TCP_NODELAY there); see docs/scale-out.md
        self.quick_ack = False
        ws_url = gateway.url.replace("http://", "ws://")
        self.ws = websocket.create_connection(f"{ws_url}/api/kernels/{kernel_id}/channels",
                                              timeout=timeout, header=gateway.headers())

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": msg_type, "username": "test",
                  "session": self.session, "date": "", "version": "5.3"}
        self.ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                 "content": content, "channel": channel, "buffers": []}))
        return msg_id

    def receive(self, timeout: float) -> dict[str, Any]:
        self.ws.settimeout(timeout)
        if self.quick_ack:
            self.ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return json.loads(self.ws.recv())

    def wait_reply(self, msg_id: str, timeout: float = 120) -> Run:
        """Everything the request ``msg_id`` produced, until its reply and idle status."""
        deadline = time.monotonic() + timeout
        reply, idle, messages = None, False, []
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply to {msg_id} within {timeout} s")
            msg = self.receive(left)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if msg.get("channel") == "shell":
                reply = msg
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif kind != "execute_input":
                messages.append(msg)
        return Run(reply, messages)

    def execute_async(self, code: str) -> str:
        """Send an execute request; its msg_id (wait_reply collects the outcome)."""
        return self.send("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})

    def execute(self, code: str, timeout: float = 120) -> Run:
        return self.wait_reply(self.execute_async(code), timeout)

    def interrupt(self) -> None:
        self.gateway.request("POST", f"/api/kernels/{self.id}/interrupt")

    def restart(self) -> None:
        self.gateway.request("POST", f"/api/kernels/{self.id}/restart")

    def shutdown(self) -> None:
        self.close()
        self.gateway.request("DELETE", f"/api/kernels/{self.id}")

    def close(self) -> None:
        self.ws.close()


if __name__ == "__main__":  # a gateway to try by hand: python tests/helpers/gateway.py DIR
    with running_gateway(Path(sys.argv[1])) as gw:
        print(gw.url, flush=True)
        gw.process.wait()
