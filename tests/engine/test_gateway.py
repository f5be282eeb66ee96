"""Jupyter Enterprise Gateway serving the AgentKernel kernel (docs/scale-out.md).

A real Enterprise Gateway (its own venv) on 127.0.0.1, our kernelspecs in its kernels path:
kernels started, run, interrupted, restarted and shut down through its REST API and websocket;
the sandbox removed when the gateway culls an idle kernel and when the gateway is stopped; two
kernels placed by its DistributedProcessProxy on two host names (127.0.0.1 launched locally,
127.0.0.2 over SSH); and a notebook cell run from JupyterLab started with ``--gateway-url``.

The gateway does not care which engine the kernels use, so these tests run on one engine.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.engines import RUN_ID, RUN_LABEL
from helpers.gateway import (
    DISTRIBUTED_SPEC,
    LOCAL_SPEC,
    Gateway,
    GatewayKernel,
    running_gateway,
)
from helpers.jupyterlab import (
    Lab,
    browser_page,
    output_text,
    run_in_cell,
    running_lab,
    shoot,
    shut_down_kernel,
    wait_kernel_idle,
)
from helpers.kernels import wait_until

from agentkernel.engine import Engine
from agentkernel_kernel.kernelspec import DISPLAY_NAME

pytestmark = pytest.mark.engine
TEST_ENGINES = ["docker"]
GONE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def gateway(engine_name: str, test_image: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway")) as gw:
        yield gw


def run_containers(engine: Engine) -> list[str]:
    """Ids of the running containers this test run made."""
    return [c.id for c in engine.list_containers([f"{RUN_LABEL}={RUN_ID}"])]


def sandbox_of(kernel: GatewayKernel, engine: Engine) -> str:
    """The container the kernel's cells run in (its hostname is the short id)."""
    run = kernel.execute("import socket; print(socket.gethostname())")
    assert run.status == "ok", run.error
    hostname = run.stream().strip()
    ids = [cid for cid in run_containers(engine) if cid.startswith(hostname)]
    assert len(ids) == 1, f"no running container of this run has id {hostname}..."
    return ids[0]


def wait_gone(engine: Engine, container_id: str, what: str) -> float:
    return wait_until(lambda: container_id not in run_containers(engine), GONE_TIMEOUT,
                      f"sandbox {container_id[:12]} removed after {what}")


def interrupt_sleep(kernel: GatewayKernel) -> None:
    """A sleeping cell, interrupted through the gateway, ends in KeyboardInterrupt."""
    msg_id = kernel.execute_async("import time; time.sleep(1000)")
    time.sleep(1.5)  # the cell reaches the sandbox's runner
    kernel.interrupt()
    run = kernel.wait_reply(msg_id, timeout=30)
    assert run.reply["content"]["status"] == "error"
    assert run.reply["content"]["ename"] == "KeyboardInterrupt"
    assert kernel.execute("print('alive')").stream() == "alive\n"


def test_start_execute_interrupt_restart_shutdown(gateway: Gateway, engine: Engine) -> None:
    kernel = gateway.connect(gateway.start_kernel(LOCAL_SPEC))
    first = sandbox_of(kernel, engine)
    assert kernel.execute("x = 6 * 7\nx").result == {"text/plain": "42"}
    interrupt_sleep(kernel)

    kernel.restart()
    kernel.close()
    kernel = gateway.connect(kernel.id)
    assert kernel.execute("'x' in globals()").result == {"text/plain": "False"}
    second = sandbox_of(kernel, engine)
    assert second != first
    wait_gone(engine, first, "a restart")

    kernel.shutdown()
    wait_gone(engine, second, "a shutdown")
    assert kernel.id not in gateway.kernel_ids()


def launches(gateway: Gateway) -> dict[str, tuple[str, int]]:
    """kernel id -> (host, pid) as the gateway logged each DistributedProcessProxy launch."""
    found = re.findall(r"Kernel launched on '([^']+)', pid: (\d+), ID: ([0-9a-f-]+)",
                       gateway.log())
    return {kid: (host, int(pid)) for host, pid, kid in found}


def ssh_server_address(pid: int) -> str | None:
    """The local address of the SSH connection process ``pid`` was started through."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(b"SSH_CONNECTION="):
            return entry.decode().split()[2]
    return None


def test_two_kernels_placed_on_two_hosts(gateway: Gateway, engine: Engine) -> None:
    ids = [gateway.start_kernel(DISTRIBUTED_SPEC) for _ in range(2)]
    placed = {kid: launches(gateway)[kid] for kid in ids}
    assert sorted(host for host, _ in placed.values()) == ["127.0.0.1", "127.0.0.2"]
    for host, pid in placed.values():
        # 127.0.0.1 is this machine to the gateway: launched directly; 127.0.0.2 over SSH
        assert ssh_server_address(pid) == (None if host == "127.0.0.1" else host)
    kernels = [gateway.connect(kid) for kid in ids]
    sandboxes = [sandbox_of(kernel, engine) for kernel in kernels]
    assert len(set(sandboxes)) == 2
    interrupt_sleep(kernels[[placed[k][0] for k in ids].index("127.0.0.2")])
    for kernel, sandbox in zip(kernels, sandboxes, strict=True):
        kernel.shutdown()
        wait_gone(engine, sandbox, "a shutdown")
    for _, pid in placed.values():
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), GONE_TIMEOUT,
                   f"kernel process {pid} exits")


def test_culled_idle_kernel_takes_its_sandbox(engine_name: str, engine: Engine, test_image: str,
                                              tmp_path: Path) -> None:
    with running_gateway(tmp_path, cull_idle_s=3) as gw:
        kernel = gw.connect(gw.start_kernel(LOCAL_SPEC))
        sandbox = sandbox_of(kernel, engine)
        kernel.close()
        wait_until(lambda: kernel.id not in gw.kernel_ids(), 60, "the idle kernel culled")
        assert "Culling" in gw.log()
        wait_gone(engine, sandbox, "the gateway culled the kernel")


def test_stopped_gateway_takes_every_sandbox(engine_name: str, engine: Engine, test_image: str,
                                             tmp_path: Path) -> None:
    with running_gateway(tmp_path) as gw:
        ids = [gw.start_kernel(LOCAL_SPEC)] + [gw.start_kernel(DISTRIBUTED_SPEC)
                                                for _ in range(2)]
        sandboxes = [sandbox_of(gw.connect(kid), engine) for kid in ids]
        pids = [pid for kid, (_, pid) in launches(gw).items() if kid in ids]
        assert gw.stop() == 0, gw.log()[-2000:]
    for sandbox in sandboxes:
        wait_gone(engine, sandbox, "the gateway stopped")
    for pid in pids:
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), GONE_TIMEOUT,
                   f"kernel process {pid} exits with the gateway")


# -- JupyterLab through the gateway --------------------------------------------------------------
NOTEBOOK = {"cells": [], "metadata": {"kernelspec": {"name": LOCAL_SPEC, "language": "python",
                                                     "display_name": DISPLAY_NAME}},
            "nbformat": 4, "nbformat_minor": 5}


def lab_api(lab: Lab, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{lab.url}{path}", data=json.dumps(body).encode(), method=method,
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def test_jupyterlab_runs_a_cell_through_the_gateway(gateway: Gateway, engine: Engine,
                                                    tmp_path: Path) -> None:
    """JupyterLab started with --gateway-url: every kernelspec and kernel is the gateway's.

    The notebook's session (and so its kernel, through the gateway) is made before the browser
    opens it: the gateway's jupyter_server 1.x stalls a websocket that collides with one
    JupyterLab opened and dropped while the kernel was still starting (docs/scale-out.md).
    """
    with running_lab("gateway", tmp_path, options_extra=[f"--gateway-url={gateway.url}"]) as lab, \
            browser_page("gateway") as page:
        lab_api(lab, "PUT", "/api/contents/gateway.ipynb",
                {"type": "notebook", "format": "json", "content": NOTEBOOK})
        session = lab_api(lab, "POST", "/api/sessions", {
            "path": "gateway.ipynb", "type": "notebook", "name": "gateway.ipynb",
            "kernel": {"name": LOCAL_SPEC}})
        assert session["kernel"]["id"] in gateway.kernel_ids()  # the gateway runs it
        warm = gateway.connect(session["kernel"]["id"])
        sandbox = sandbox_of(warm, engine)
        warm.close()

        page.goto(lab.page_url("lab/tree/gateway.ipynb"))
        wait_kernel_idle(page)
        cell = run_in_cell(page, 0, "import socket; print(socket.gethostname())")
        assert sandbox.startswith(output_text(cell, r"[0-9a-f]{12}"))
        shoot(page, "gateway", "hostname")
        shut_down_kernel(page)
        wait_gone(engine, sandbox, "Shut Down Kernel in JupyterLab")
