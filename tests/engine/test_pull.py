"""Pulling a missing image, with progress: from a real registry on 127.0.0.1 (Debian's
docker-registry), since no outside registry is reachable here."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from helpers.engines import busybox_image

from agentkernel.engine import Engine
from agentkernel.errors import ImageNotAvailable
from agentkernel.sandbox import Sandbox

pytestmark = pytest.mark.engine
REGISTRY = "127.0.0.1:5077"  # scripts/setup.sh marks it insecure (plain http) for Podman
CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: {addr}
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry serving on 127.0.0.1 for this module."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is installed by scripts/setup.sh"
    folder = tmp_path_factory.mktemp("registry")
    config = folder / "config.yml"
    config.write_text(CONFIG.format(root=folder / "data", addr=REGISTRY))
    log = (folder / "registry.log").open("w")
    server = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        _wait_for(f"http://{REGISTRY}/v2/")
        yield REGISTRY
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def _wait_for(url: str) -> None:
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the registry did not answer at {url}")


def _push(engine: Engine, reference: str) -> None:
    repo, _, tag = reference.rpartition(":")
    busybox_image(engine, "agentkernel-busybox:1")
    engine.api.tag("agentkernel-busybox:1", repo, tag)
    for event in engine.api.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in event, event
    for name in (reference, "agentkernel-busybox:1"):
        engine.api.remove_image(name, force=True)


def test_missing_image_is_pulled_with_progress(engine_name: str, engine: Engine,
                                               registry: str) -> None:
    reference = f"{registry}/agentkernel/busybox-{engine_name}:1"
    _push(engine, reference)
    assert not engine.image_present(reference)
    events: list[dict] = []
    try:
        with Sandbox(image=reference, engine=engine, network=False) as sb:
            pass  # the context manager starts without a progress callback: no events needed
        engine.api.remove_image(reference, force=True)
        sb = Sandbox(image=reference, engine=engine, network=False).start(progress=events.append)
        try:
            assert sb.exec("echo pulled and running").stdout == "pulled and running\n"
        finally:
            sb.stop()
        assert engine.image_present(reference)
        assert any(e.get("status") for e in events), events
    finally:
        engine.api.remove_image(reference, force=True)


def test_unknown_tag_in_a_reachable_registry(engine_name: str, engine: Engine,
                                             registry: str) -> None:
    with pytest.raises(ImageNotAvailable, match="is not available locally or from its registry"):
        Sandbox(image=f"{registry}/agentkernel/none:0", engine=engine).start()
