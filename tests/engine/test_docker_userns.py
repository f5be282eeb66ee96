"""Docker's operator step for "container root is not host root" (SECURITY.md, "Stronger
isolation"): a dockerd with ``"userns-remap": "default"`` runs every sandbox in a user namespace
whose root is the first uid of the ``dockremap`` user's /etc/subuid range. Proved on a dockerd of
the test's own (helpers/dockerd.py), so the host's engines are left as they are; the host's
Docker, without the remap, shows what the step changes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.dockerd import own_dockerd
from helpers.engines import busybox_image

from agentkernel.engine import Engine
from agentkernel.sandbox import Sandbox

pytestmark = pytest.mark.engine
TEST_ENGINES = ["docker"]
IMAGE = "agentkernel-busybox:userns"
WHOLE_RANGE = (0, 0, 4294967295)
"""The uid map of a process in the host's user namespace: every id is itself."""


@pytest.fixture
def remapped_docker(engine_name: str) -> Iterator[Engine]:
    """A dockerd of the test's own with the documented operator step (``--userns-remap=default``:
    it makes the ``dockremap`` user and its /etc/subuid and /etc/subgid ranges when missing)
    and a busybox image imported into it; gone afterwards, with its folders and mounts."""
    if engine_name != "docker":
        pytest.skip("userns-remap is Docker's; Podman maps each sandbox (test_isolation_layers)")
    bridge = host_bridge()
    with own_dockerd(["--userns-remap=default"]) as engine:
        busybox_image(engine, IMAGE)
        yield engine
    # a dockerd with --bridge=none deletes docker0 in its network namespace: not the host's
    assert host_bridge() == bridge, "the host engine's docker0 was deleted or made again"


def host_bridge() -> str | None:
    """The host Docker's default bridge interface (docker0): its index, None when missing."""
    path = Path("/sys/class/net/docker0/ifindex")
    return path.read_text().strip() if path.exists() else None


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder anyone on the host may reach and write (a remapped root is "anyone" to the
    host's files), holding a file of the host's root that others may only read."""
    folder = Path(tempfile.mkdtemp(prefix="agentkernel-userns-", dir="/tmp"))
    folder.chmod(0o777)
    (folder / "root-owned").write_text("host\n")
    (folder / "root-owned").chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def first_mapping(text: str) -> tuple[int, int, int]:
    """The first line of a /proc/PID/uid_map: (inside, outside, count)."""
    inside, outside, count = (int(field) for field in text.split("\n")[0].split())
    return inside, outside, count


def first_range(table: str, user: str = "dockremap") -> tuple[int, int]:
    """``user``'s first range in /etc/subuid or /etc/subgid (``table``): (start, count)."""
    for line in Path(table).read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == user:
            start, count = rest.split(":")
            return int(start), int(count)
    raise AssertionError(f"{user} has no range in {table}")


def write_as_root(engine: Engine, image: str, folder: Path, name: str,
                  ) -> tuple[tuple[int, int, int], tuple[int, int, int], bool]:
    """In a sandbox of ``image`` on ``engine`` (no network) given ``folder`` read-write, its
    root writes ``name`` there and tries to append to the host root's file: (uid map's first
    line, gid map's, whether the append worked)."""
    sandbox = Sandbox(image=image, engine=engine, network=False,
                      volumes=[f"{folder}:/shared:rw"]).start()
    try:
        uids = first_mapping(sandbox.exec(["cat", "/proc/self/uid_map"]).stdout)
        gids = first_mapping(sandbox.exec(["cat", "/proc/self/gid_map"]).stdout)
        assert sandbox.exec(["sh", "-c", f"echo made > /shared/{name}"]).ok
        appended = sandbox.exec(["sh", "-c", "echo x >> /shared/root-owned"]).ok
    finally:
        sandbox.stop()
    return uids, gids, appended


def test_docker_userns_remap_root_is_not_host_root(engine: Engine, test_image: str,
                                                   remapped_docker: Engine,
                                                   open_folder: Path) -> None:
    """With userns-remap, root inside maps to dockremap's first subordinate uid and gid, which
    own what it writes to a writable host folder, and it cannot write the host root's files;
    on the host's Docker without it, root inside is the host's root."""
    uids, gids, appended = write_as_root(engine, test_image, open_folder, "by-host-docker")
    assert (uids, gids) == (WHOLE_RANGE, WHOLE_RANGE)
    made = os.stat(open_folder / "by-host-docker")
    assert (made.st_uid, made.st_gid) == (0, 0) and appended

    uid_start, uid_count = first_range("/etc/subuid")
    gid_start, gid_count = first_range("/etc/subgid")
    uids, gids, appended = write_as_root(remapped_docker, IMAGE, open_folder, "by-remapped")
    assert uid_start > 0 and uids == (0, uid_start, uid_count)
    assert gid_start > 0 and gids == (0, gid_start, gid_count)
    made = os.stat(open_folder / "by-remapped")
    assert (made.st_uid, made.st_gid) == (uid_start, gid_start)
    assert not appended and (open_folder / "root-owned").read_text() == "host\nx\n"
