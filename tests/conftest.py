"""Shared fixtures: the real engines (Docker and Podman), the test image, cleanup by label.

A missing engine or image is a failure, never a skip: scripts/setup.sh provides both.
``AGENTKERNEL_TEST_ENGINES=docker`` (comma list) narrows the engines for a local run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from kernels import execute, install_kernelspec, running_kernel

from agentkernel.engine import Engine, connect
from agentkernel.errors import EngineUnavailable
from agentkernel.imagebuild import import_tar
from agentkernel.images import image_present
from agentkernel.sandbox import LABEL, LABEL_OWNER, Sandbox

RUN_LABEL = "agentkernel.test"
RUN_ID = secrets.token_hex(4)
# Every container made during this run, in this process or in kernels it starts, carries it.
os.environ["AGENTKERNEL_LABELS"] = f"{RUN_LABEL}={RUN_ID}"
ENGINES = [e.strip() for e in os.getenv("AGENTKERNEL_TEST_ENGINES", "docker,podman").split(",")]
TEST_IMAGE = os.environ.get("AGENTKERNEL_IMAGE") or "agentkernel-test:latest"
_engines: dict[str, Engine] = {}


def get_engine(name: str) -> Engine:
    """A connected engine of kind ``name``; fails the test when it does not answer."""
    if name not in _engines:
        try:
            _engines[name] = connect(name)
        except EngineUnavailable as err:
            pytest.fail(f"{name} engine unavailable (run scripts/setup.sh): {err}", pytrace=False)
    return _engines[name]


@pytest.fixture(scope="session", params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each engine in turn; AGENTKERNEL_ENGINE is set so subprocesses use it too."""
    os.environ["AGENTKERNEL_ENGINE"] = request.param
    get_engine(request.param)
    yield request.param


@pytest.fixture(scope="session")
def engine(engine_name: str) -> Engine:
    return get_engine(engine_name)


@pytest.fixture(scope="session")
def test_image(engine: Engine) -> str:
    """The image built by scripts/setup.sh, present in the engine under test."""
    if not image_present(engine, TEST_IMAGE):
        pytest.fail(f"image {TEST_IMAGE} missing in {engine.kind}: run scripts/setup.sh",
                    pytrace=False)
    os.environ["AGENTKERNEL_IMAGE"] = TEST_IMAGE
    return TEST_IMAGE


def run_containers(engine: Engine) -> dict[str, str]:
    """id -> owner label of every container this test run made."""
    found = engine.api.containers(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"})
    return {c["Id"]: (c.get("Labels") or {}).get(LABEL_OWNER, "") for c in found}


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
                engine.api.remove_container(cid, force=True)
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


@pytest.fixture(scope="session")
def kernelspec(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The agentkernel kernelspec, installed in a temporary Jupyter data dir."""
    install_kernelspec(tmp_path_factory.mktemp("jupyter"))


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


def labelled(engine: Engine, name: str) -> list[dict]:
    """Containers carrying agentkernel's label for sandbox ``name``."""
    return engine.api.containers(all=True, filters={"label": f"{LABEL}={name}"})


def busybox_image(engine: Engine, tag: str) -> None:
    """Import an image holding only a static busybox: a shell and tools, but no python3."""
    import io
    import shutil
    import tarfile

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
