"""The layers beyond a container's namespaces: gVisor as the runtime (`agentkernel runtime setup
runsc`, done by scripts/setup.sh) and, on Podman, a user namespace per sandbox (root inside is
an unprivileged uid outside). See SECURITY.md, "Stronger isolation"."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.engines import labelled
from helpers.kernels import wait_until

from agentkernel.config import SandboxConfig
from agentkernel.engine import Endpoint, Engine, connect_endpoint
from agentkernel.errors import ConfigError, SandboxNotFound
from agentkernel.sandbox import Sandbox, shifted
from agentkernel.sandbox.workspace import volume_name

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


def test_files_in_and_out_of_a_gvisor_sandbox(runsc_engine: Engine, test_image: str,
                                              tmp_path: Path) -> None:
    """Podman copies files by entering the container's mount namespace, which is not the
    cell's file system under gVisor: the files still arrive and come back."""
    sandbox = Sandbox(image=test_image, engine=runsc_engine, runtime="runsc").start()
    try:
        sandbox.write_file("/work/new/hello.py", "print('hi')\n", mode=0o755)
        assert sandbox.exec(["python3", "/work/new/hello.py"]).stdout == "hi\n"
        assert sandbox.read_file("/work/new/hello.py") == b"print('hi')\n"
        with pytest.raises(SandboxNotFound):
            sandbox.read_file("/work/missing.txt")
    finally:
        sandbox.stop()


def test_files_reach_a_gvisor_sandbox_whose_image_has_no_tar(runsc_engine: Engine,
                                                            test_image: str) -> None:
    """On Podman a gVisor sandbox's files are unpacked by the image's own tar; without one
    (a distroless image has only python3), python3's tarfile does it."""
    sandbox = Sandbox(image=test_image, engine=runsc_engine, runtime="runsc").start()
    try:
        assert sandbox.exec(["sh", "-c", "rm -f $(command -v tar) && ! command -v tar"]).ok
        sandbox.write_file("/work/no-tar/hello.txt", "hi\n")
        assert sandbox.exec(["cat", "/work/no-tar/hello.txt"]).stdout == "hi\n"
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


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder under /tmp that anyone on the host may reach and write (as a user namespace's
    root is "anyone" to the host's files), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="agentkernel-userns-", dir="/tmp"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_podman_root_is_not_host_root(engine_name: str, engine: Engine, test_image: str,
                                      open_folder: Path) -> None:
    """On Podman each sandbox has its own user namespace: root inside maps to an unprivileged
    uid, which owns what it writes to a writable host folder and cannot write the host's
    root-owned files."""
    if engine_name != "podman":
        return  # Docker: the daemon's userns-remap, an operator step (SECURITY.md)
    root_file = open_folder / "root-owned"
    root_file.write_text("host")
    root_file.chmod(0o644)
    sandbox = Sandbox(image=test_image, engine=engine,
                      volumes=[f"{open_folder}:/shared:rw"]).start()
    try:
        inside, outside, count = first_mapping(sandbox.exec(["cat", "/proc/self/uid_map"]).stdout)
        assert inside == 0 and outside > 0 and count == 65536
        gid_inside, gid_outside, _ = first_mapping(
            sandbox.exec(["cat", "/proc/self/gid_map"]).stdout)
        assert gid_inside == 0 and gid_outside > 0
        assert sandbox.exec(["id", "-u"]).stdout == "0\n"
        assert sandbox.exec(["id", "-u"], user="65534").stdout == "65534\n"  # nobody exists
        assert sandbox.exec(["sh", "-c", "echo made > /shared/made-inside"]).ok
        made = os.stat(open_folder / "made-inside")
        assert (made.st_uid, made.st_gid) == (outside, gid_outside)
        tried = sandbox.exec(["sh", "-c", "echo x >> /shared/root-owned"])
        assert not tried.ok and "ermission denied" in tried.stderr
        assert root_file.read_text() == "host"
    finally:
        sandbox.stop()


def test_podman_workspace_root_is_not_host_root(engine_name: str, engine: Engine,
                                                test_image: str, tmp_path: Path) -> None:
    """The default copy-on-write workspace keeps the user namespace: its lower layer is the
    project with its ids shifted into the namespace's range (an idmapped mount), so inside,
    files keep their owners, root may change root's files (copied up) and read a 0700 folder,
    and what it writes is owned outside by the namespace's ids, in the upper layer; the
    project on the host is untouched, and nothing of the workspace is mounted on the host
    once the sandbox runs, nor after it (Podman 4.3 lost the overlays it mounted)."""
    if engine_name != "podman":
        return  # Docker: the daemon's userns-remap, an operator step (SECURITY.md)
    project = tmp_path / "project"  # under pytest's 0700 folder: others cannot reach it
    (project / "private").mkdir(parents=True)
    (project / "private" / "p.txt").write_text("p")
    (project / "private").chmod(0o700)
    (project / "root-owned.txt").write_text("host\n")
    (project / "mine.txt").write_text("user\n")
    os.chown(project / "mine.txt", 1000, 1000)
    before = owners_and_contents(project)
    with Sandbox(SandboxConfig(image=test_image, workspace=str(project), workdir=str(project)),
                 engine=engine) as sandbox:
        inside, outside, count = first_mapping(sandbox.exec(["cat", "/proc/self/uid_map"]).stdout)
        assert inside == 0 and outside > 0 and count == 65536
        _, gid_outside, _ = first_mapping(sandbox.exec(["cat", "/proc/self/gid_map"]).stdout)
        owners = sandbox.exec(["stat", "-c", "%u:%g %n", "root-owned.txt", "mine.txt", "private"])
        assert owners.stdout == "0:0 root-owned.txt\n1000:1000 mine.txt\n0:0 private\n"
        wrote = sandbox.exec(["sh", "-c", "echo more >> root-owned.txt && echo x >> mine.txt && "
                              "cat private/p.txt && echo new > new.txt"])
        assert wrote.ok and wrote.stdout == "p", wrote.stderr
        workspace_id = sandbox.workspace_id
        assert workspace_id and not shifted.mount_path(workspace_id).exists()
        assert not shifted.overlay_path(workspace_id).parent.exists()
        assert workspace_id not in Path("/proc/self/mountinfo").read_text()
        upper = Path(engine.volume_mountpoint(volume_name(sandbox.workspace_id, "upper")) or "")
        made = (upper / "new.txt").stat()
        assert (made.st_uid, made.st_gid) == (outside, gid_outside)
        assert (upper / "root-owned.txt").stat().st_uid == outside
        assert (upper / "mine.txt").stat().st_uid == outside + 1000
        assert (upper / "root-owned.txt").read_text() == "host\nmore\n"
    assert owners_and_contents(project) == before
    assert workspace_id not in Path("/proc/self/mountinfo").read_text()
    wait_until(lambda: engine.volume_labels(volume_name(workspace_id, "upper")) is None, 10,
               "the workspace's volumes removed by the sandbox's reaper")


def test_podman_persistent_sandbox_with_the_workspace_restarts(engine_name: str,
                                                               engine: Engine,
                                                               test_image: str,
                                                               tmp_path: Path) -> None:
    """A persistent sandbox whose shifted workspace's overlay was detached from the host once
    it started: stopped, then reconnected by name, it starts again with the overlay made
    again (what cells wrote is there, root inside is still not the host's), and nothing of
    it stays mounted on the host."""
    if engine_name != "podman":
        return
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.txt").write_text("data\n")
    name = f"keep-ws-{os.getpid()}"
    sandbox = Sandbox(SandboxConfig(image=test_image, name=name, persistent=True,
                                    workspace=str(project), workdir=str(project)),
                      engine=engine).start()
    try:
        assert sandbox.exec(["sh", "-c", "echo more >> data.txt"]).ok
        sandbox.stop()
        again = Sandbox.connect(name, engine=engine)
        assert again.is_running
        assert again.exec(["cat", "data.txt"]).stdout == "data\nmore\n"
        assert first_mapping(again.exec(["cat", "/proc/self/uid_map"]).stdout)[1] > 0
        mounts = Path("/proc/self/mountinfo").read_text()
        assert f"{shifted.OVERLAYS}/" not in mounts and f"{shifted.MOUNTS}/" not in mounts
    finally:
        sandbox.remove()
    assert (project / "data.txt").read_text() == "data\n"


def owners_and_contents(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry below ``root``: owner, group, mode and a file's contents."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if path.is_file() else b""
        found[str(path.relative_to(root))] = (info.st_uid, info.st_gid, info.st_mode, data)
    return found


def test_podman_folder_others_cannot_reach_keeps_host_root(engine_name: str, engine: Engine,
                                                           test_image: str,
                                                           tmp_path: Path) -> None:
    """A host folder only the host's root may reach (pytest's are 0700) would be unreadable
    from a user namespace: that sandbox keeps the host's root, and the folder works."""
    if engine_name != "podman":
        return
    (tmp_path / "note").write_text("mine")
    sandbox = Sandbox(image=test_image, engine=engine,
                      volumes=[f"{tmp_path}:/private:ro"]).start()
    try:
        assert first_mapping(sandbox.exec(["cat", "/proc/self/uid_map"]).stdout)[1] == 0
        assert sandbox.exec(["cat", "/private/note"]).stdout == "mine"
    finally:
        sandbox.stop()
