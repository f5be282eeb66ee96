"""Engine fixtures: the real engines (Docker and Podman), the test image, cleanup by label.

A missing engine or image is a failure, never a skip: scripts/setup.sh provides both.
``AGENTKERNEL_TEST_ENGINES=docker`` (comma list) narrows the engines for a local run. A module
may name its own engines in ``TEST_ENGINES`` (e.g. the TLS engine ``docker-tls`` too, see
helpers/engines.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.engines import RUN_ID, RUN_LABEL, TEST_IMAGE, engines_for, get_engine, use_engine
from helpers.kernels import execute, install_kernelspec, running_kernel
from helpers.policies import lab_rules, write_policy
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from agentkernel.config.policy import POLICY_ENV
from agentkernel.engine import Engine
from agentkernel.sandbox import LABEL_OWNER, Sandbox

# This machine's engines keep their storage on ext4, where no size limit of a sandbox's
# writable root can be applied: every kernel's first cell would say so. test_disk_limit.py
# tests the limit and that note; the other tests run without a limit asked for.
os.environ.setdefault("AGENTKERNEL_DISK_MB", "0")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run engine tests on each engine kind their module is for (helpers.engines)."""
    if "engine_name" in metafunc.fixturenames:
        metafunc.parametrize("engine_name", engines_for(metafunc.module), indirect=True,
                             scope="session")


@pytest.fixture(scope="session")
def engine_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each engine in turn; AGENTKERNEL_ENGINE (and DOCKER_HOST for a remote one) is set so
    subprocesses use it too."""
    use_engine(request.param)
    get_engine(request.param)
    yield request.param


@pytest.fixture(scope="session")
def engine(engine_name: str) -> Engine:
    return get_engine(engine_name)


@pytest.fixture(scope="session")
def test_image(engine: Engine) -> str:
    """The image built by scripts/setup.sh, present in the engine under test."""
    if not engine.image_present(TEST_IMAGE):
        pytest.fail(f"image {TEST_IMAGE} missing in {engine.kind}: run scripts/setup.sh",
                    pytrace=False)
    os.environ["AGENTKERNEL_IMAGE"] = TEST_IMAGE
    return TEST_IMAGE


def run_containers(engine: Engine) -> dict[str, str]:
    """id -> owner label of every container this test run made."""
    found = engine.list_containers([f"{RUN_LABEL}={RUN_ID}"], all=True)
    return {c.id: c.labels.get(LABEL_OWNER, "") for c in found}


def _owner_gone_or_us(owner: str) -> bool:
    """True when the owning process is this one or no longer exists."""
    _, _, pid = owner.rpartition(":")
    if not pid.isdigit() or int(pid) == os.getpid():
        return True
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each engine test, remove the containers it left behind.

    A container whose owner still lives (a module-scoped kernel) is that owner's to remove.
    """
    if "engine_name" not in request.fixturenames:
        yield
        return
    engine = get_engine(request.getfixturevalue("engine_name"))
    before = set(run_containers(engine))
    yield
    for cid, owner in run_containers(engine).items():
        if cid not in before and _owner_gone_or_us(owner):
            try:
                engine.remove_container(cid)
            except Exception:
                pass


@pytest.fixture
def sandbox(engine: Engine, test_image: str) -> Iterator[Sandbox]:
    """A started sandbox (moderate profile), removed afterwards."""
    sb = Sandbox(image=test_image, engine=engine).start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def shared_sandbox(engine: Engine, test_image: str) -> Iterator[Sandbox]:
    """One sandbox for a module's read-mostly tests."""
    sb = Sandbox(image=test_image, engine=engine).start()
    yield sb
    sb.stop()


@pytest.fixture(scope="session", autouse=True)
def lab_policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every kernel and extension of the engine tests runs under the lab policy unless a test
    says otherwise (the security tests do: helpers.policies.DEFAULT and stricter ones)."""
    base = tmp_path_factory.getbasetemp()
    before = os.environ.get(POLICY_ENV)
    # outside the folders it makes writable: no policy file may lie where a sandbox writes
    with tempfile.TemporaryDirectory(prefix="agentkernel-lab-policy-") as folder:
        policy = write_policy(Path(folder, "lab-policy.json"), **lab_rules(base))
        os.environ[POLICY_ENV] = str(policy)
        yield policy
    if before is None:
        os.environ.pop(POLICY_ENV, None)
    else:
        os.environ[POLICY_ENV] = before


@pytest.fixture(scope="session")
def kernelspec() -> Iterator[None]:
    """The agentkernel kernelspec, installed in a temporary Jupyter data dir. It is kept out of
    pytest's temporary folders, which the lab policy makes writable: no policy lets a sandbox
    write where a kernelspec is (its argv runs on the host)."""
    with tempfile.TemporaryDirectory(prefix="agentkernel-jupyter-") as prefix:
        install_kernelspec(Path(prefix))
        yield


@pytest.fixture(scope="module")
def kernel(engine_name: str, test_image: str,
           kernelspec: None) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """One real kernel per module and engine."""
    with running_kernel() as pair:
        yield pair


@pytest.fixture
def kc(kernel: tuple[KernelManager, BlockingKernelClient]) -> BlockingKernelClient:
    """The module kernel's client, its sandbox alive (an earlier test may have broken it)."""
    client = kernel[1]
    if execute(client, "1").status != "ok":
        assert execute(client, "%sandbox restart").status == "ok"
    return client
