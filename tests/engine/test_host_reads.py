"""What a sandbox's files cost the host when they come out, and where they may land.

Through the Sandbox API and the real kernel, on Docker and Podman: a sparse file stays sparse on
the host, a folder of tiny files is counted as the host's disk takes it, and a link a cell
plants in a folder it shares with the host never sends a download (or an upload's read)
somewhere the command did not name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.faultkit import one_line_error
from helpers.kernels import execute, running_kernel
from helpers.policies import DEFAULT, env_with, write_policy

from agentkernel.engine import Engine
from agentkernel.errors import SandboxError, TooLarge
from agentkernel.sandbox import Sandbox

pytestmark = pytest.mark.engine
MB = 1 << 20
SPARSE = ("f = open('/tmp/sparse', 'wb'); f.write(b'head'); f.seek(47 << 20); f.write(b'tail'); "
          "f.truncate(48 << 20); f.close()")


def python(sandbox: Sandbox, code: str) -> None:
    result = sandbox.exec(["python3", "-c", code])
    assert result.ok, result.stderr


def test_a_sparse_file_stays_sparse_on_the_host(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    python(shared_sandbox, SPARSE)
    dest = shared_sandbox.download("/tmp/sparse", tmp_path / "sparse", max_bytes=64 * MB)
    size, allocated = dest.stat().st_size, dest.stat().st_blocks * 512
    print(f"\n48 MB sparse file downloaded: {allocated} bytes allocated on the host")
    assert size == 48 * MB and allocated < MB
    with dest.open("rb") as copy:
        assert copy.read(4) == b"head" and copy.read(MB).count(0) == MB
        copy.seek(47 * MB)
        assert copy.read() == b"tail" + bytes(MB - 4)


def test_a_download_is_counted_as_the_hosts_disk_takes_it(shared_sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    """2000 one-byte files are 2000 bytes of data, and at least 2000 disk blocks (8 MB)."""
    python(shared_sandbox, "import os; os.makedirs('/tmp/many', exist_ok=True)\n"
                           "for i in range(2000): open(f'/tmp/many/{i}', 'w').write('x')")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TooLarge, match="limit of 4 MB at many/.* the host's disk"):
        shared_sandbox.download("/tmp/many", out / "many", max_bytes=4 * MB)
    assert not list(out.iterdir()), "nothing is left on the host"
    back = shared_sandbox.download("/tmp/many", out / "many", max_bytes=16 * MB)
    assert len(list(back.iterdir())) == 2000


@pytest.fixture
def shared_folder(engine: Engine, test_image: str, tmp_path: Path) -> Iterator[
        tuple[Sandbox, Path, Path]]:
    """A sandbox with ``project`` mounted read-write at /workspace, where its cell planted
    ``results -> elsewhere`` (a host folder it does not see), and ``elsewhere`` holding a
    secret."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret").write_text("KEY\n")
    sandbox = Sandbox(image=test_image, engine=engine,
                      volumes=[f"{project}:/workspace:rw"]).start()
    try:
        python(sandbox, f"import os; os.symlink({str(elsewhere)!r}, '/workspace/results'); "
                        "open('/tmp/model.bin', 'wb').write(b'weights')")
        assert (project / "results").is_symlink()
        yield sandbox, project, elsewhere
    finally:
        sandbox.stop()


def test_a_download_never_follows_a_link_planted_in_a_shared_folder(
        shared_folder: tuple[Sandbox, Path, Path]) -> None:
    sandbox, project, elsewhere = shared_folder
    with pytest.raises(SandboxError, match="links are never followed"):
        sandbox.download("/tmp/model.bin", project / "results" / "model.bin")
    with pytest.raises(SandboxError, match="links are never followed"):
        sandbox.download("/tmp/model.bin", project / "results" / "new" / "model.bin")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["secret"]
    assert sandbox.download("/tmp/model.bin", project / "out" / "model.bin").read_bytes() == (
        b"weights")


def test_an_upload_never_reads_through_a_link_planted_in_a_shared_folder(
        shared_folder: tuple[Sandbox, Path, Path]) -> None:
    sandbox, project, _elsewhere = shared_folder
    with pytest.raises(SandboxError, match="links are never followed"):
        sandbox.upload(project / "results" / "secret", "/tmp/secret")
    assert not sandbox.exists("/tmp/secret")


def test_the_kernels_download_and_upload_refuse_a_planted_link(engine_name: str, kernelspec: None,
                                                               tmp_path: Path) -> None:
    """Both folders writable by the policy: the link leads where the cell may write, but not
    where the command said."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret").write_text("KEY\n")
    policy = write_policy(tmp_path / "policy.json", workspace="bind",
                          host_folders=["{notebook}:rw", f"{elsewhere}:rw"])
    env = {**DEFAULT, "HOME": str(tmp_path), **env_with(policy)}
    with running_kernel(env=env, cwd=project) as (_km, kc):
        run = execute(kc, f"import os; os.symlink({str(elsewhere)!r}, 'results'); "
                          "open('/tmp/model.bin', 'wb').write(b'weights')")
        assert run.status == "ok", [m["content"] for m in run.messages]
        assert (project / "results").is_symlink(), "the notebook's folder is bound, writable"
        one_line_error(execute(kc, "%sandbox download /tmp/model.bin results/model.bin"),
                       "refused", "goes through a link", "name the place itself")
        one_line_error(execute(kc, "%sandbox upload results/secret /tmp/secret"),
                       "refused", "goes through a link")
        assert execute(kc, "import os; os.path.exists('/tmp/secret')").result == {
            "text/plain": "False"}
        assert execute(kc, f"%sandbox download /tmp/model.bin {elsewhere}/model.bin"
                       ).status == "ok", "the folder itself, named, may be written"
        assert execute(kc, "%sandbox download /tmp/model.bin out/model.bin").status == "ok"
    assert (project / "out" / "model.bin").read_bytes() == b"weights"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["model.bin", "secret"]
