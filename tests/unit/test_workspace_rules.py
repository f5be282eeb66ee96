"""Which host folder a notebook's sandbox sees, and what it never sees there (no engine)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentkernel.config.policy import SandboxPolicy
from agentkernel.config.secretscan import secret_entries
from agentkernel.config.workspace import project_root, server_root, workspace_id
from agentkernel.errors import ConfigError
from agentkernel.sandbox.workspace import Change, _read_changes, check_root


def test_credentials_are_found_at_any_depth_and_nothing_else(tmp_path: Path) -> None:
    for name in ("nb/.ssh/id_rsa", "a/b/.aws/credentials", ".netrc", "x/kernel-9.json",
                 "deep/er/id_ed25519", "c/.config/gcloud/key.json", "c/.config/git/credentials",
                 ".venv/lib/python3.11/site-packages/docker/credentials/store.py",
                 "notes/credentials.md", "data/kernel.json", "id_rsa.pub"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "link").symlink_to("/root")  # never followed
    found = {p.relative_to(tmp_path).as_posix() for p in secret_entries(tmp_path)}
    assert found == {"nb/.ssh", "a/b/.aws", ".netrc", "x/kernel-9.json", "deep/er/id_ed25519",
                     "c/.config/gcloud", "c/.config/git/credentials"}


def test_a_folder_too_large_to_check_is_said(tmp_path: Path) -> None:
    for index in range(20):
        (tmp_path / f"f{index}").write_text("x")
    with pytest.raises(ValueError, match="more than 10"):
        secret_entries(tmp_path, limit=10)


def test_the_project_reaches_the_repository_root_within_the_policy(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "nb" / "deeper").mkdir(parents=True)
    (project / ".git").mkdir()
    notebook = project / "nb" / "deeper"
    assert project_root(notebook, lambda _folder: True) == project
    assert project_root(notebook, lambda folder: folder != project) == project / "nb"
    assert project_root(notebook, lambda _folder: False) is None
    # the server's root bounds it from above, the notebook's folder from below
    assert project_root(notebook, lambda _folder: True, server=project / "nb") == project / "nb"
    assert project_root(notebook, lambda _folder: True, server=tmp_path) == tmp_path
    (project / ".git").rmdir()
    assert project_root(notebook, lambda _folder: True) == notebook


def test_the_servers_root_is_read_from_its_runtime_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "jpserver-4242.json").write_text(json.dumps({"root_dir": "/srv/notebooks"}))
    assert server_root(4242) == Path("/srv/notebooks")
    assert server_root(4243) is None


def test_a_home_server_root_stops_below_home(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / "project" / "nb").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / f"jpserver-{os.getppid()}.json").write_text(
        json.dumps({"root_dir": str(home)}))
    policy = SandboxPolicy(config=None, notebook_dir=home / "project" / "nb")
    assert policy.workspace_root() == home / "project"


def test_a_restarted_kernel_keeps_its_workspace_id(tmp_path: Path) -> None:
    first = workspace_id(str(tmp_path / "kernel-1.json"), tmp_path)
    assert first == workspace_id(str(tmp_path / "kernel-1.json"), tmp_path)
    assert first != workspace_id(str(tmp_path / "kernel-2.json"), tmp_path)
    assert workspace_id(None, tmp_path) is None


def test_a_folder_the_mount_options_cannot_carry_is_refused() -> None:
    for root in ("/data/a,b", "/data/a:b", "/data/a\\b"):
        with pytest.raises(ConfigError, match="cannot be a copy-on-write workspace"):
            check_root(root)
    check_root("/data/a b=c")


def test_an_upper_layer_reads_as_changes(tmp_path: Path) -> None:
    import io
    import tarfile

    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "helper.py").write_text("x")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind in (("./nb", tarfile.DIRTYPE), ("./nb/helper.py", tarfile.REGTYPE),
                           ("./nb/gone.txt", tarfile.CHRTYPE), ("./nb/new", tarfile.DIRTYPE),
                           ("./nb/new/r.txt", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    chunks = [buffer.getvalue()[i:i + 700] for i in range(0, len(buffer.getvalue()), 700)]
    assert list(_read_changes(chunks, tmp_path)) == [
        Change("changed", "nb/helper.py"), Change("deleted", "nb/gone.txt"),
        Change("added", "nb/new", True), Change("added", "nb/new/r.txt")]
