"""The layers beyond a container's namespaces: gVisor as the runtime (`agentkernel runtime setup
runsc`, done by scripts/setup.sh) and, on Podman, a user namespace per sandbox (root inside is
an unprivileged uid outside). See SECURITY.md, "Stronger isolation"."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.engines import labelled

from agentkernel.engine import Endpoint, Engine, connect_endpoint
from agentkernel.errors import ConfigError
from agentkernel.sandbox import Sandbox

pytestmark = pytest.mark.engine
# the Podman service whose default runtime is gVisor's launcher (scripts/setup.sh)
PODMAN_RUNSC = "unix:///run/podman/podman-runsc.sock"


def first_mapping(text: str) -> tuple[int, int, int]:
    """The first line of a /proc/PID/uid_map: (inside, outside, count)."""
    inside, outside, count = (int(field) for field in text.split("\n")[0].split())
    return inside, outside, count


@pytest.fixture
def runsc_engine(engine_name: str, engine: Engine) -> Iterator[Engine]:
    """The engine that runs gVisor sandboxes: Docker itself (a registered runtime), or for
    Podman, whose API cannot choose a runtime per container, its gVisor service."""
    if engine_name != "podman":
        yield engine
        return
    runsc = connect_endpoint("podman", Endpoint(PODMAN_RUNSC))
    yield runsc
    runsc.close()


def test_gvisor_runs_the_sandbox(runsc_engine: Engine, test_image: str) -> None:
    sandbox = Sandbox(image=test_image, engine=runsc_engine, runtime="runsc").start()
    try:
        kernel_log = sandbox.exec(["dmesg"])
        assert "Starting gVisor" in kernel_log.stdout, kernel_log
        assert sandbox.exec(["python3", "-c", "print(6 * 7)"]).stdout == "42\n"
    finally:
        sandbox.stop()


def test_podman_refuses_a_runtime_it_did_not_apply(engine_name: str, engine: Engine,
                                                   test_image: str) -> None:
    """Podman's API ignores the runtime: its runc service's sandbox is refused in one line
    that says how to get gVisor, and nothing is left behind."""
    if engine_name != "podman":
        return  # Docker applies the runtime it is given (test above)
    sandbox = Sandbox(image=test_image, engine=engine, runtime="runsc", name="ak-rt-refused")
    with pytest.raises(ConfigError) as refused:
        sandbox.start()
    message = str(refused.value)
    assert "\n" not in message and "runtime 'runsc' not applied" in message
    assert "agentkernel runtime setup runsc" in message
    assert labelled(engine, "ak-rt-refused") == []


def test_podman_root_is_not_host_root(engine_name: str, engine: Engine, test_image: str,
                                      tmp_path: Path) -> None:
    """On Podman each sandbox has its own user namespace: root inside maps to an unprivileged
    uid, which owns what it writes to a writable host folder."""
    if engine_name != "podman":
        return  # Docker: the daemon's userns-remap, an operator step (SECURITY.md)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # a folder the host lets anyone write: root inside is "anyone" here
    sandbox = Sandbox(image=test_image, engine=engine,
                      volumes=[f"{shared}:/shared:rw"]).start()
    try:
        inside, outside, count = first_mapping(sandbox.exec(["cat", "/proc/self/uid_map"]).stdout)
        assert inside == 0 and outside > 0 and count < 2**32 - 1
        gid_inside, gid_outside, _ = first_mapping(
            sandbox.exec(["cat", "/proc/self/gid_map"]).stdout)
        assert gid_inside == 0 and gid_outside > 0
        assert sandbox.exec(["id", "-u"]).stdout == "0\n"
        assert sandbox.exec(["sh", "-c", "echo made > /shared/made-inside"]).ok
        made = os.stat(shared / "made-inside")
        assert (made.st_uid, made.st_gid) == (outside, gid_outside)
        # the host's own root-owned files are nobody's to it, and not writable
        root_file = tmp_path / "root-owned"
        root_file.write_text("host")
        root_file.chmod(0o644)
        sandbox_view = Sandbox(image=test_image, engine=engine,
                               volumes=[f"{tmp_path}:/host:rw"]).start()
        try:
            tried = sandbox_view.exec(["sh", "-c", "echo x >> /host/root-owned"])
            assert not tried.ok and "ermission denied" in tried.stderr
            assert root_file.read_text() == "host"
        finally:
            sandbox_view.stop()
    finally:
        sandbox.stop()
