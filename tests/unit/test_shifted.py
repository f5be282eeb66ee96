"""The project folder with its ids shifted into the sandboxes' user namespace
(agentkernel/sandbox/shifted.py): a real idmapped mount on this host (root, Linux 5.19+), and
the overlay over it that a sandbox gets."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentkernel.errors import SandboxError
from agentkernel.sandbox import shifted

SHIFT = (2_000_000, 3_000_000, 65536)
# CI runs as root: there a missing root fails the test instead of skipping it
needs_root = pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true",
                                reason="an idmapped mount needs root")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "private").mkdir(parents=True)
    (project / "private").chmod(0o700)
    (project / "mine.txt").write_text("mine")
    os.chown(project / "mine.txt", 1000, 1001)
    return project


@needs_root
def test_ids_are_shifted_read_only_and_released(folder: Path, tmp_path: Path) -> None:
    workspace_id = f"test-{os.getpid()}"
    target = shifted.mount(str(folder), workspace_id, SHIFT)
    try:
        assert target == shifted.mount_path(workspace_id)
        mine, private = (target / "mine.txt").stat(), (target / "private").stat()
        assert (mine.st_uid, mine.st_gid) == (SHIFT[0] + 1000, SHIFT[1] + 1001)
        assert (private.st_uid, private.st_gid) == SHIFT[:2]
        assert (target / "mine.txt").read_text() == "mine"
        with pytest.raises(OSError) as refused:
            (target / "new.txt").write_text("x")
        assert refused.value.errno == errno.EROFS
    finally:
        shifted.release(workspace_id)
    assert not target.exists()


@needs_root
def test_the_overlay_over_the_shifted_folder_is_the_sandboxs(folder: Path,
                                                             tmp_path: Path) -> None:
    """The overlay a sandbox gets: over the shifted folder (detached at once: the overlay
    holds it), in a folder only the sandbox's root may enter; copy-up keeps the shifted ids
    and the project is untouched; release leaves nothing mounted."""
    workspace_id = f"test-overlay-{os.getpid()}"
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    os.chown(upper, SHIFT[0], SHIFT[1])
    merged = shifted.mount_overlay(str(folder), workspace_id, SHIFT, str(upper), str(work))
    try:
        assert merged == shifted.overlay_path(workspace_id)
        assert not shifted.mount_path(workspace_id).exists()  # the lower layer is detached
        entry = merged.parent.stat()
        assert (entry.st_uid, entry.st_gid, entry.st_mode & 0o777) == (*SHIFT[:2], 0o700)
        assert shifted.OVERLAYS.stat().st_mode & 0o777 == 0o711
        assert (merged / "mine.txt").stat().st_uid == SHIFT[0] + 1000
        with open(merged / "mine.txt", "a") as appended:
            appended.write("!")
        (merged / "new.txt").write_text("new")
        assert (upper / "mine.txt").stat().st_uid == SHIFT[0] + 1000
        assert (upper / "mine.txt").read_text() == "mine!"
        assert (folder / "mine.txt").read_text() == "mine"
        assert not (folder / "new.txt").exists()
        assert workspace_id in shifted.leftovers()
    finally:
        shifted.release(workspace_id)
    assert not merged.parent.exists() and workspace_id not in shifted.leftovers()
    assert str(merged) not in Path("/proc/self/mountinfo").read_text()


@needs_root
def test_a_missing_folder_leaves_no_mount_point(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="changed since the policy checked it"):
        shifted.mount(str(tmp_path / "missing"), f"test-missing-{os.getpid()}", SHIFT)
    assert not shifted.mount_path(f"test-missing-{os.getpid()}").exists()


@needs_root
def test_a_link_on_the_way_is_refused_not_followed(folder: Path, tmp_path: Path) -> None:
    """A part of the project's path swapped for a link (by a sandbox that can write near it)
    after the policy checked it: the folder is reached without following links, as a bind's
    source is, so the link's target is never mounted."""
    link = tmp_path / "swapped"
    link.symlink_to(folder)
    workspace_id = f"test-link-{os.getpid()}"
    with pytest.raises(SandboxError, match="is a link now"):
        shifted.mount(str(link), workspace_id, SHIFT)
    assert not shifted.mount_path(workspace_id).exists()


def test_release_without_a_mount_is_nothing() -> None:
    shifted.release(f"never-mounted-{os.getpid()}")


def test_overlays_over_shifted_folders_are_found_by_volume(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    volumes = "/var/lib/containers/storage/volumes"
    mountinfo.write_text(
        f"66 27 0:47 / {volumes}/agentkernel-ws-a-overlay/_data rw,relatime - overlay overlay "
        f"rw,lowerdir={shifted.MOUNTS}/a,upperdir={volumes}/agentkernel-ws-a-upper/_data,"
        f"workdir={volumes}/agentkernel-ws-a-work/_data\n"
        f"67 27 0:48 / {volumes}/agentkernel-ws-b-overlay/_data rw,relatime - overlay overlay "
        f"rw,lowerdir=/home/me/project,upperdir=/u,workdir=/w\n"
        "68 27 0:49 / /merged rw - overlay overlay "
        f"rw,lowerdir={shifted.MOUNTS}/c,upperdir=/u,workdir=/w\n"
        "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n")
    assert shifted.overlays(str(mountinfo)) == {
        "agentkernel-ws-a-overlay": f"{volumes}/agentkernel-ws-a-overlay/_data"}


@needs_root
def test_the_id_map_namespace_comes_from_a_process_with_threads_and_leaves_none() -> None:
    """The user namespace whose fd carries the id map is made by a forked child, also from
    a process with threads running (a start's walk and requests go on beside it): a new
    namespace, the child gone once the fd is open, and an answer in time (in a process of
    its own, so that a child left waiting fails the test instead of hanging it)."""
    script = textwrap.dedent(f"""
        import os, threading, time
        from agentkernel.sandbox import shifted
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        fd = shifted._userns_fd(*{SHIFT!r})
        made, ours = os.readlink(f"/proc/self/fd/{{fd}}"), os.readlink("/proc/self/ns/user")
        try:
            os.waitpid(-1, os.WNOHANG)
            children = "left"
        except ChildProcessError:
            children = "none"
        print(made.startswith("user:["), made != ours, children)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=30)
    assert result.stdout.split() == ["True", "True", "none"], result.stderr
