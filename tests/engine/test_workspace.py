"""The notebook's project as the sandbox sees it: copy-on-write, and the host untouched.

A project laid out the usual way (``project/data/input.csv``, ``project/images/``,
``project/nb/`` holding the notebook and a ``helper.py``, a git repository), with the default
policy: the ordinary cells below give the local ``python3`` kernel's output, and the host's
files are byte for byte as they were. Then the attacks of the workspace issue, each played as a
notebook would: a folder swapped for a link while the sandbox starts, a writable folder that
holds the kernel's Python, a module planted in the notebook's folder, a policy file in a
writable folder, credentials inside the project.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.differential import reference_env
from helpers.kernels import execute, running_kernel, wait_until
from helpers.policies import DEFAULT, env_with, write_policy
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from agentkernel.config import SandboxConfig
from agentkernel.engine import Engine
from agentkernel.errors import ConfigError, SandboxError
from agentkernel.sandbox import LABEL_OWNER, Sandbox, shifted, workspace
from agentkernel.sandbox.request import owner_label
from agentkernel.sandbox.workspace import LABEL_ROOT, LABEL_WORKSPACE

# A 1x1 PNG (the smallest valid one: signature, IHDR, IDAT, IEND).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5f6f6f90000000049454e44ae426082")

# The ordinary cells of the issue, as a notebook in project/nb runs them (each one cell).
CELLS = [
    "open('../data/input.csv').read()",
    "from IPython.display import Image\nImage(filename='../images/logo.png').data[:8]",
    "%%writefile mod.py\nVALUE = 42\n",
    "import mod\nmod.VALUE",
    "import helper\nhelper.NAME",
    "import pandas as pd\npd.DataFrame({'a': [1, 2]}).to_csv('out.csv')\nopen('out.csv').read()",
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
    "plt.plot([1, 2]); plt.savefig('fig.png'); import os; os.path.getsize('fig.png') > 0",
    "import os\nos.makedirs('results', exist_ok=True)\n"
    "open('results/r.txt', 'w').write('done')\nsorted(os.listdir('results'))",
    "with open('notes.txt', 'a') as f:\n    f.write('more\\n')\nopen('notes.txt').read()",
    "os.remove('old.txt')\nos.path.exists('old.txt')",
    "os.getcwd()",
    "!ls ../data",
    "sorted(os.listdir('..'))",
]


def tree_digest(root: Path) -> str:
    """A hash of every entry below ``root``: path, kind, mode and contents (links unfollowed)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(root)}\0{info.st_mode}\0".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
        elif path.is_symlink():
            digest.update(os.readlink(path).encode())
    return digest.hexdigest()


def make_project(base: Path) -> Path:
    """project/{data,images,nb} as users lay it out, in a git repository."""
    project = base / "project"
    (project / "data").mkdir(parents=True)
    (project / "images").mkdir()
    (project / "nb").mkdir()
    (project / "data" / "input.csv").write_text("x,y\n1,2\n")
    (project / "images" / "logo.png").write_bytes(PNG)
    (project / "nb" / "helper.py").write_text("NAME = 'helper'\n")
    (project / "nb" / "notes.txt").write_text("first\n")
    (project / "nb" / "old.txt").write_text("old\n")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    return project


def outputs(kc: BlockingKernelClient, cells: list[str]) -> list[tuple[str, str, str]]:
    """Each cell's (status, stdout, text/plain result)."""
    results = []
    for cell in cells:
        run = execute(kc, cell)
        results.append((run.status, run.stream(), (run.result or {}).get("text/plain", "")))
    return results


@pytest.fixture(autouse=True)
def _kernelspec(kernelspec: None) -> None:
    """These tests start their own kernels."""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


@pytest.fixture
def workspace_kernel(engine_name: str, test_image: str,
                     project: Path) -> Iterator[BlockingKernelClient]:
    """A kernel of a notebook in project/nb, under the default policy."""
    with running_kernel(env=DEFAULT, cwd=project / "nb") as (_km, kc):
        yield kc


def test_ordinary_cells_behave_as_on_the_local_kernel(workspace_kernel: BlockingKernelClient,
                                                       project: Path) -> None:
    before = tree_digest(project)
    sandboxed = outputs(workspace_kernel, CELLS)
    assert tree_digest(project) == before, "a cell changed the host's files"
    # the local kernel with the IPython the sandbox has for this image's matplotlib
    with running_kernel(kernel_name="python3", cwd=project / "nb",
                        env=reference_env()) as (_km, local):
        expected = outputs(local, CELLS)
    assert sandboxed == expected


def test_on_podman_the_kernels_root_is_not_the_hosts(engine_name: str,
                                                    workspace_kernel: BlockingKernelClient,
                                                    project: Path) -> None:
    """The default kernel of a notebook in a project, on Podman: its sandbox has a user
    namespace (root inside is not uid 0 on the host) with the copy-on-write workspace, whose
    files keep their owners inside; nothing of the workspace is mounted on the host."""
    if engine_name != "podman":
        return  # Docker: the daemon's userns-remap (tests/engine/test_docker_userns.py)
    os.chown(project / "data" / "input.csv", 1000, 1000)
    run = execute(workspace_kernel, "import os\n"
                  "print(open('/proc/self/uid_map').read().split()[:2])\n"
                  "print(os.stat('../data/input.csv').st_uid)\n"
                  "open('../data/input.csv', 'a').write('x')")
    assert run.status == "ok", run.messages
    uid_map, owner = run.stream().splitlines()
    inside, outside = eval(uid_map)  # noqa: S307 (our own cell's repr of two strings)
    assert inside == "0" and int(outside) > 0
    assert owner == "1000"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"{shifted.OVERLAYS}/" not in mounts and f"{shifted.MOUNTS}/" not in mounts


def test_changes_are_listed_and_export_needs_a_writable_folder(
        workspace_kernel: BlockingKernelClient, project: Path) -> None:
    kc = workspace_kernel
    assert execute(kc, "open('new.txt', 'w').write('n')\nimport os; os.remove('old.txt')\n"
                   "open('helper.py', 'a').write('#')").status == "ok"
    listing = execute(kc, "%sandbox changes").stream()
    assert "added    nb/new.txt" in listing
    assert "changed  nb/helper.py" in listing
    assert "deleted  nb/old.txt" in listing
    refused = execute(kc, "%sandbox export new.txt")
    assert refused.status == "error"
    assert "read-only" in refused.error["evalue"] and "\n" not in refused.error["evalue"]
    assert not (project / "nb" / "new.txt").exists()


def test_export_copies_chosen_files_home(engine_name: str, test_image: str, project: Path,
                                         tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", host_folders=["{project}:rw"])
    with running_kernel(env=env_with(policy), cwd=project / "nb") as (_km, kc):
        assert execute(kc, "import os; os.makedirs('results/deep')\n"
                       "open('results/deep/r.txt', 'w').write('result')\n"
                       "open('../.git/config', 'a').write('[core]\\nfsmonitor = evil\\n')"
                       ).status == "ok"
        assert not (project / "nb" / "results").exists()
        assert execute(kc, "%sandbox export results").status == "ok"
        assert (project / "nb" / "results" / "deep" / "r.txt").read_text() == "result"
        git = execute(kc, "%sandbox export ../.git/config")
        assert git.status == "error" and ".git" in git.error["evalue"]
        assert "fsmonitor" not in (project / ".git" / "config").read_text()


def test_files_survive_a_kernel_restart(engine_name: str, test_image: str,
                                        project: Path) -> None:
    with running_kernel(env=DEFAULT, cwd=project / "nb") as (km, kc):
        assert execute(kc, "%%writefile kept.py\nX = 7\n").status == "ok"
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=120)
        assert execute(kc, "import kept\nkept.X").result["text/plain"] == "7"
    assert not (project / "nb" / "kept.py").exists()


def test_credentials_in_the_project_are_hidden(engine_name: str, test_image: str,
                                               project: Path) -> None:
    secrets = {
        "nb/.ssh/id_rsa": "PRIVATE KEY", ".aws/credentials": "[default]\nkey=1",
        ".netrc": "machine x password y", "nb/.git-credentials": "https://u:p@h",
        ".docker/config.json": '{"auths": {}}', "kernel-1234.json": '{"key": "secret"}',
        "data/id_ed25519": "PRIVATE KEY",
    }
    for name, text in secrets.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    with running_kernel(env=DEFAULT, cwd=project / "nb") as (_km, kc):
        for name in secrets:
            run = execute(kc, f"import pathlib\np = pathlib.Path('../{name}')\n"
                          "p.read_text() if p.is_file() else ''")
            assert run.status == "ok", run.error
            assert run.result["text/plain"] == "''", name
        assert execute(kc, "import os\nos.listdir('.ssh') if os.path.isdir('.ssh') else []"
                       ).result["text/plain"] == "[]"
        assert execute(kc, "open('input.txt', 'w').write('x')").status == "ok"  # still writable


# -- attacks with a writable folder (the README's own example) ------------------------------------
def test_a_folder_swapped_for_a_link_is_never_mounted(engine: Engine, test_image: str,
                                                      tmp_path: Path) -> None:
    """The policy checked ``work/sub``; before the engine mounts it, a cell makes it a link
    to a folder outside the policy. The start is refused, nothing outside is mounted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    sub = tmp_path / "work" / "sub"
    sub.mkdir(parents=True)
    sandbox = Sandbox(SandboxConfig(image=test_image, volumes=[f"{sub}:/data:rw"]),
                      engine=engine)
    sub.rename(tmp_path / "work" / "was-sub")
    sub.symlink_to(outside)
    with pytest.raises(SandboxError, match="changed since the policy checked it"):
        sandbox.start()
    assert engine.list_containers([f"agentkernel.sandbox={sandbox.name}"], all=True) == []


def test_a_workspace_swapped_for_a_link_is_never_mounted(engine: Engine, test_image: str,
                                                        tmp_path: Path) -> None:
    """The same swap on the copy-on-write workspace's folder, which the engine mounts (as its
    overlay's lower layer) by path: refused, nothing outside is mounted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    sandbox = Sandbox(SandboxConfig(image=test_image, workspace=str(project)), engine=engine)
    project.rename(tmp_path / "was-project")
    project.symlink_to(outside)
    with pytest.raises(SandboxError, match="changed since the policy checked it"):
        sandbox.start()
    assert engine.list_containers([f"agentkernel.sandbox={sandbox.name}"], all=True) == []


@pytest.mark.parametrize("write", [True, False])
def test_never_reachable_paths_are_refused_by_the_python_api(write: bool) -> None:
    mode = "rw" if write else "ro"
    for path in ("/run/docker", "/var/lib/docker", "/proc", "/sys", "/dev", "/etc"):
        with pytest.raises(ConfigError, match="mounting .* refused"):
            SandboxConfig(volumes=[f"{path}:/x:{mode}"]).resolve()
    with pytest.raises(ConfigError, match="mounting .* refused"):
        SandboxConfig(volumes=[f"{Path(sys.prefix).parent}:/x:rw"]).resolve()
    allowed = SandboxConfig(volumes=["/etc:/x:ro"], unsafe_host_paths=True).resolve()
    assert allowed.binds[0].source == "/etc"


def test_the_kernel_never_imports_from_the_notebooks_folder(engine_name: str, test_image: str,
                                                            tmp_path: Path) -> None:
    marker = tmp_path / "ran-on-the-host"
    (tmp_path / "agentkernel_kernel.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit(0)\n")
    with running_kernel(env=DEFAULT, cwd=tmp_path) as (_km, kc):
        assert execute(kc, "1 + 1").result["text/plain"] == "2"
    assert not marker.exists()


def test_a_policy_file_a_sandbox_may_write_is_refused(engine_name: str, test_image: str,
                                                      tmp_path: Path) -> None:
    project = make_project(tmp_path)
    policy = write_policy(project / "agentkernel-policy.json",
                          host_folders=["{project}:rw"], max_profile="permissive")
    with running_kernel(env=env_with(policy), cwd=project / "nb") as (_km, kc):
        run = execute(kc, "1")
        assert run.status == "error"
        assert f"policy file {policy} refused" in run.error["evalue"]
        assert "\n" not in run.error["evalue"]


def test_a_writable_bind_of_the_kernels_python_is_refused(engine_name: str, test_image: str,
                                                          tmp_path: Path) -> None:
    venv_parent = Path(sys.prefix).parent
    policy = write_policy(tmp_path / "policy.json", host_folders=[f"{venv_parent}:rw"])
    with running_kernel(env=env_with(policy), cwd=tmp_path) as (_km, kc):
        run = execute(kc, f"%sandbox start -v {venv_parent}:/p:rw")
        assert run.status == "error"
        assert "the Python that runs this kernel" in run.error["evalue"] or (
            "Jupyter config or data folder" in run.error["evalue"])


def test_the_start_stays_fast_on_a_large_project(engine: Engine, test_image: str,
                                                 tmp_path: Path) -> None:
    """10,000 files: the workspace is an overlay, nothing is copied (the bench measures it)."""
    project = tmp_path / "big"
    for index in range(100):
        folder = project / f"d{index}"
        folder.mkdir(parents=True)
        for number in range(100):
            (folder / f"f{number}.txt").write_text(str(number))
    with Sandbox(SandboxConfig(image=test_image, workspace=str(project),
                               workdir=str(project)), engine=engine) as sandbox:
        listing = sandbox.exec(["sh", "-c", "ls | wc -l; cat d99/f99.txt"]).stdout.split()
        assert listing == ["100", "99"]
    assert json.dumps(sorted(os.listdir(project))[:2]) == '["d0", "d1"]'


def test_a_shut_down_kernel_takes_its_workspace_and_gc_takes_a_killed_ones(
        engine: Engine, test_image: str, project: Path) -> None:
    def workspaces(km: KernelManager | None = None) -> set[str]:
        """The workspaces on the engine (of the kernel of ``km`` only)."""
        volumes = engine.list_volumes([LABEL_WORKSPACE])
        return {v.labels[LABEL_WORKSPACE] for v in volumes
                if km is None or v.labels.get(LABEL_OWNER) == owner_label(
                    km.provisioner.process.pid)}

    with running_kernel(env=DEFAULT, cwd=project / "nb") as (km, kc):
        assert execute(kc, "open('a.txt', 'w').write('a')").status == "ok"
        (ours,) = workspaces(km)
    wait_until(lambda: ours not in workspaces(), 10, "the workspace removed at shutdown")
    with running_kernel(env=DEFAULT, cwd=project / "nb") as (km, kc):
        assert execute(kc, "open('a.txt', 'w').write('a')").status == "ok"
        (killed,) = workspaces(km)
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        km.provisioner.process.wait(10)  # reaped: its pid is free
        wait_until(lambda: not engine.list_containers([f"{LABEL_WORKSPACE}={killed}"],
                                                      all=True), 10,
                   "the killed kernel's sandbox removed by its reaper")
        assert killed in workspaces(), "a killed kernel may be restarted: its files stay"
        gc = subprocess.run([sys.executable, "-m", "agentkernel.cli", "gc", "--workspaces"],
                            capture_output=True, text=True, env={
                                **os.environ, "AGENTKERNEL_ENGINE": engine.kind})
        assert f"removed workspace {killed}" in gc.stdout, gc
    assert killed not in workspaces()


def test_creating_a_volume_that_exists_gives_it_as_it_is(engine: Engine) -> None:
    """The workspace's start asks for its volumes by creating them (one request each): the
    engine answers with the volume already there, its labels and options untouched (the
    docker CLI's documented `volume create` on a name in use; Podman's compatible API)."""
    name = f"agentkernel-test-{secrets.token_hex(4)}"
    labels = {LABEL_OWNER: owner_label(), "agentkernel.test": "first"}
    try:
        made = engine.create_volume(name, labels)
        again = engine.create_volume(name, {**labels, "agentkernel.test": "second"},
                                     {"type": "tmpfs", "device": "tmpfs"})
        assert made.labels == again.labels == labels
        assert made.mountpoint and again.mountpoint == made.mountpoint
        assert engine.volume(name) == made
    finally:
        engine.remove_volume(name)


def test_a_workspace_over_another_folder_gets_an_overlay_of_that_folder(
        engine: Engine, tmp_path: Path) -> None:
    """A workspace id given again with another folder (a kernel's connection file reused
    from another folder): its overlay is made again over the new folder, its layers kept
    (the engine's overlay volume; or, with ids shifted for a user namespace, the overlay
    this process mounts, detached once the sandbox would have started)."""
    workspace_id = f"test-{secrets.token_hex(4)}"
    labels = {LABEL_OWNER: owner_label()}
    try:
        for name in ("first", "second", "second"):
            root = tmp_path / name
            root.mkdir(exist_ok=True)
            (root / f"{name}.txt").write_text(name)
            mount = workspace.workspace_mount(engine, str(root), workspace_id, labels)
            assert mount["Target"] == str(root)
            if mount["Type"] == "bind":  # shifted: the merged folder is the overlay
                try:
                    assert sorted(os.listdir(mount["Source"])) == [f"{name}.txt"]
                finally:
                    workspace.release_mounts(workspace_id)
            else:
                overlay = engine.volume(mount["Source"])
                assert overlay is not None and overlay.labels[LABEL_ROOT] == str(root)
    finally:
        workspace.discard(engine, workspace_id)


def test_on_podman_an_overlay_the_engine_mounts_keeps_root_the_hosts(
        engine: Engine, test_image: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Podman gives a sandbox a user namespace only where its root can use what is mounted:
    with the shifted workspace turned off by the operator (``SHIFT_ENV=0``), the workspace is
    an overlay volume the engine mounts over the host folder (a volume with driver options),
    and the sandbox keeps the host's root (as SECURITY.md says); with agentkernel's bundle
    volume only (no driver options; the start has just looked it up), it has one."""
    if engine.kind != "podman":
        return  # Docker: the daemon's userns-remap (tests/engine/test_docker_userns.py)

    def uid_map(config: SandboxConfig) -> list[str]:
        sandbox = Sandbox(config, engine=engine)
        try:
            sandbox.start(ipython=True)
            return sandbox.exec(["cat", "/proc/self/uid_map"]).stdout.split()
        finally:
            sandbox.stop()

    monkeypatch.setenv(workspace.SHIFT_ENV, "0")
    assert uid_map(SandboxConfig(image=test_image, workspace=str(project))) == [
        "0", "0", "4294967295"]
    monkeypatch.delenv(workspace.SHIFT_ENV)
    inside, outside, _ = uid_map(SandboxConfig(image=test_image))
    assert inside == "0" and int(outside) > 0
