"""Engine helpers for tests: connected engines by kind, labelled containers, tiny images."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tarfile

import pytest

from agentkernel.engine import ContainerSummary, Engine, connect
from agentkernel.errors import EngineUnavailable
from agentkernel.imagebuild import import_tar
from agentkernel.sandbox import LABEL

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


def labelled(engine: Engine, name: str) -> list[ContainerSummary]:
    """Containers carrying agentkernel's label for sandbox ``name``."""
    return engine.list_containers([f"{LABEL}={name}"], all=True)


def busybox_image(engine: Engine, tag: str) -> None:
    """Import an image holding only a static busybox: a shell and tools, but no python3."""
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
