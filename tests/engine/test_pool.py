"""The warm pool: kernels launched through the pool provisioner get a running sandbox."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.engines import ENGINES, REMOTE_ENGINES
from helpers.kernels import execute, kernel_containers, running_kernel, wait_until

from agentkernel.engine import Engine
from agentkernel.errors import SandboxError
from agentkernel.pool import POOL_LABEL, WarmPool
from agentkernel_kernel.kernelspec import install
from agentkernel_kernel.provisioner import PoolProvisioner

pytestmark = pytest.mark.engine
TEST_ENGINES = [*ENGINES, *REMOTE_ENGINES]  # the handoff over TLS relays the runner stream
POOL_KERNEL = "agentkernel-pool-test"


@pytest.fixture(scope="module")
def pool_kernelspec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    prefix = tmp_path_factory.mktemp("pool-jupyter")
    install(prefix=str(prefix), kernel_name=POOL_KERNEL, pool_size=1,
            display_name="AgentKernel Sandbox (warm pool test)")
    data = str(prefix / "share" / "jupyter")
    saved = os.environ.get("JUPYTER_PATH", "")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([data, saved])
    yield
    os.environ["JUPYTER_PATH"] = saved  # later tests (JupyterLab's launcher) must not see it
    for pool in PoolProvisioner._pools.values():
        pool.close()
    PoolProvisioner._pools.clear()


def pooled(engine: Engine) -> list[dict]:
    return engine.api.containers(filters={"label": f"{POOL_LABEL}=warm"})


def container_of(kc, engine: Engine) -> str:
    """The id of the container the kernel's cells run in (its hostname is the short id).

    A handed-over container's owner label names the pool's process, not the kernel.
    """
    hostname = execute(kc, "import socket; print(socket.gethostname())").stream().strip()
    ids = [c["Id"] for c in engine.api.containers() if c["Id"].startswith(hostname)]
    assert len(ids) == 1, hostname
    return ids[0]


def running(engine: Engine, container_id: str) -> bool:
    return any(c["Id"] == container_id for c in engine.api.containers())


def test_kernels_take_warm_sandboxes(engine_name: str, engine: Engine, test_image: str,
                                     pool_kernelspec: None) -> None:
    with running_kernel(kernel_name=POOL_KERNEL) as (km, kc):  # creates this process's pool
        assert execute(kc, "1").status == "ok"
        wait_until(lambda: len(pooled(engine)) >= 1, 60)  # the pool filled itself meanwhile
        warm_ids = {c["Id"] for c in pooled(engine)}
        assert len(warm_ids) == 1
        assert not warm_ids & {c["Id"] for c in kernel_containers(engine, km)}
    with running_kernel(kernel_name=POOL_KERNEL) as (km, kc):
        mine = container_of(kc, engine)
        assert {mine} == warm_ids, "the kernel got the warm sandbox"
        run = execute(kc, "import os; x = 6 * 7; print(os.getpid() > 0); x")
        assert run.result == {"text/plain": "42"} and run.stream() == "True\n"
        msg_id = kc.execute("import time; time.sleep(1000)")
        time.sleep(0.5)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=10)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    wait_until(lambda: not running(engine, mine), 15)


def test_a_used_sandbox_is_never_handed_out_again(engine_name: str, engine: Engine,
                                                  test_image: str, pool_kernelspec: None) -> None:
    seen: set[str] = set()
    for _ in range(3):
        with running_kernel(kernel_name=POOL_KERNEL) as (km, kc):
            assert execute(kc, "open('/tmp/mark', 'w').write('used')").status == "ok"
            mine = container_of(kc, engine)
            assert mine not in seen
            seen.add(mine)
            assert execute(kc, "import os; os.path.exists('/tmp/mark')").result == {
                "text/plain": "True"}


def test_sigkilled_pooled_kernel_takes_its_container(engine_name: str, engine: Engine,
                                                     test_image: str,
                                                     pool_kernelspec: None) -> None:
    with running_kernel(kernel_name=POOL_KERNEL) as (km, kc):
        mine = container_of(kc, engine)
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        wait_until(lambda: not running(engine, mine), 15)


def test_a_warm_sandbox_that_lost_a_socket_is_not_handed_out(engine_name: str, engine: Engine,
                                                             test_image: str,
                                                             pool_kernelspec: None) -> None:
    """A warm sandbox whose runner socket is closed in the pool's process (seen once in the
    bench's 50 kernels at once: the launch handed Popen fd -1 and failed) is removed, and the
    kernel starts its own sandbox."""
    with running_kernel(kernel_name=POOL_KERNEL) as (km, kc):
        assert execute(kc, "1").status == "ok"
        pool = km.provisioner._pool_for(dict(os.environ))
        wait_until(lambda: pool.available >= 1, 60)
        (broken,) = pool._ready
    broken_id = broken.sandbox.container_id
    os.close(broken.stream._sock.detach())  # the socket object closed for good: fileno() -1
    with running_kernel(kernel_name=POOL_KERNEL) as (km, kc):
        assert execute(kc, "6 * 7").result == {"text/plain": "42"}
        assert container_of(kc, engine) != broken_id
        assert not running(engine, broken_id)


def test_pool_close_removes_warm_sandboxes(engine_name: str, engine: Engine,
                                           test_image: str) -> None:
    from agentkernel.config import SandboxConfig

    pool = WarmPool(2, SandboxConfig(image=test_image), engine_kind=engine.kind)
    wait_until(lambda: pool.available == 2, 90)
    ids = [w.sandbox.container_id for w in pool._ready]
    pool.close()
    running = {c["Id"] for c in engine.api.containers()}
    assert not running & set(ids)
    with pytest.raises(SandboxError, match="accepted 0 to 8"):
        WarmPool(9)


def test_kernelspec_names_the_provisioner(tmp_path: Path) -> None:
    import json

    path = install(prefix=str(tmp_path), kernel_name="k", pool_size=2)
    spec = json.loads(Path(path, "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "agentkernel-pool", "config": {"pool_size": 2}}
    plain = json.loads(Path(install(prefix=str(tmp_path), kernel_name="p"), "kernel.json")
                       .read_text())
    assert "kernel_provisioner" not in plain["metadata"]
