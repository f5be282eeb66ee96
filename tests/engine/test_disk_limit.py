"""The size limit of a sandbox's writable root (``disk_mb``), on Docker and Podman.

Where the engine's storage can limit a container's writable layer (overlay on xfs with pquota,
btrfs, zfs), the limit is applied; where it cannot (overlay on ext4, as on this test machine),
the sandbox still starts; when the operator chose the size, its first cell says, in one line,
that it has no limit (the default's absence is only logged: every notebook would show it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.kernels import execute, running_kernel
from helpers.policies import env_with, lab_rules, write_policy

from agentkernel.engine import Engine
from agentkernel.sandbox import Sandbox

pytestmark = pytest.mark.engine
QUOTA_FILESYSTEMS = {"xfs", "btrfs", "zfs"}


def backing_filesystem(engine: Engine) -> str:
    """What the engine's storage lives on, as the engine reports it (`docker info`)."""
    info = engine.client.info()  # type: ignore[attr-defined]
    status = dict(info.get("DriverStatus") or [])
    return status.get("Backing Filesystem") or info.get("Driver", "")


def test_the_writable_root_is_limited_or_the_user_is_told(engine: Engine,
                                                          test_image: str) -> None:
    sandbox = Sandbox(image=test_image, engine=engine, disk_mb=2048).start()
    try:
        size = sandbox.exec(["df", "-k", "/"]).stdout.splitlines()[-1].split()[1]
        notes = " ".join(sandbox.notes)
        fs = backing_filesystem(engine)
        print(f"\n{engine.kind} storage on {fs}: / is {int(size) // 1024} MB; notes: {notes}")
        if fs in QUOTA_FILESYSTEMS:
            assert int(size) <= 2048 * 1024 and "size limit" not in notes
        else:
            assert "the sandbox's root file system has no size limit (disk_mb 2048)" in notes
            assert "cannot apply one (" in notes and "\n" not in notes
        assert sandbox.exec("echo still works").stdout == "still works\n"
    finally:
        sandbox.stop()


def test_the_kernels_first_cell_says_when_there_is_no_limit(engine: Engine, kernelspec: None,
                                                           tmp_path: Path) -> None:
    capable = backing_filesystem(engine) in QUOTA_FILESYSTEMS
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    policy = env_with(write_policy(tmp_path / "policy.json", **lab_rules(notebook),
                                   workspace="off"))  # the root file system alone
    with running_kernel(env={"AGENTKERNEL_DISK_MB": "3g", **policy}, cwd=notebook) as (_km, kc):
        first = execute(kc, "import os; st = os.statvfs('/'); print(st.f_blocks * st.f_frsize "
                            "<= 3 << 30)")
        notes = [line for line in first.stream("stderr").splitlines() if "size limit" in line]
        if capable:
            assert first.stream() == "True\n" and not notes
        else:
            assert first.stream() == "False\n"
            assert len(notes) == 1 and notes[0].startswith(
                "[agentkernel] the sandbox's root file system has no size limit (disk_mb "
                "3072): the engine's storage cannot apply one ("), notes
        assert "size limit" not in execute(kc, "print('again')").stream("stderr")
    for size in ("0", ""):  # none, or the default (10g where it can be applied, else logged)
        with running_kernel(env={"AGENTKERNEL_DISK_MB": size, **policy},
                            cwd=notebook) as (_km, kc):
            assert "size limit" not in execute(kc, "print('hello')").stream("stderr")
