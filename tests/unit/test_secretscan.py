"""The credential walk remembers folder listings only while the folder is unchanged: a listing
is used again only for a folder with the same identity and change time, and a folder changed
just before a walk is listed afresh at the next one (no engine)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agentkernel.config import secretscan
from agentkernel.config.secretscan import secret_entries

TICK_S = 0.05  # longer than a tick of the file system's clock (at most 10 ms at HZ=100)


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The folders the walk lists (not taken from what it remembered), with a private cache
    of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folders: list[str] = []
    real = secretscan._list

    def counting(folder: str) -> secretscan.Listing | None:
        folders.append(folder)
        return real(folder)

    monkeypatch.setattr(secretscan, "_list", counting)
    return folders


def _project(root: Path) -> Path:
    for name in ("src/pkg/mod.py", ".venv/lib/site.py", "data/raw/a.csv", "nb/analysis.ipynb"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    return root


def _found(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in secret_entries(root)}


def test_unchanged_folders_are_not_listed_again(
        tmp_path: Path, listed: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "project")
    monkeypatch.setattr(secretscan, "SETTLED_NS", -1)  # as if every folder had settled
    assert _found(root) == set()
    assert len(listed) == 8  # the root and its seven folders
    listed.clear()
    assert _found(root) == set()
    assert listed == []
    time.sleep(TICK_S)
    (root / "data" / "raw" / ".aws").mkdir()
    (root / "nb" / "kernel-1234.json").write_text("{}")
    assert _found(root) == {"data/raw/.aws", "nb/kernel-1234.json"}
    assert sorted(listed) == [str(root / "data" / "raw"), str(root / "nb")]


def test_a_folder_changed_just_before_the_walk_is_listed_afresh(
        tmp_path: Path, listed: list[str]) -> None:
    """Within a tick of the file system's clock a change may leave the change time as it
    was: a folder changed less than SETTLED_NS before the walk is not remembered."""
    root = _project(tmp_path / "project")
    assert _found(root) == set()
    (root / "src" / "pkg" / "id_ed25519").write_text("key")  # at once: no tick has passed
    listed.clear()
    assert _found(root) == {"src/pkg/id_ed25519"}
    assert len(listed) == 8  # the root and its seven folders


def test_setting_the_modification_time_back_does_not_hide_a_new_secret(
        tmp_path: Path, listed: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell that writes a bound folder can set its modification time back; its change time
    moves on all the same."""
    root = _project(tmp_path / "project")
    monkeypatch.setattr(secretscan, "SETTLED_NS", -1)
    assert _found(root) == set()
    folder = root / "data"
    before = folder.stat()
    time.sleep(TICK_S)
    (folder / ".netrc").write_text("machine x password y")
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert folder.stat().st_mtime_ns == before.st_mtime_ns
    assert _found(root) == {"data/.netrc"}


def test_a_folder_swapped_for_another_is_listed_afresh(
        tmp_path: Path, listed: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "project")
    monkeypatch.setattr(secretscan, "SETTLED_NS", -1)
    assert _found(root) == set()
    other = _project(tmp_path / "other")
    (other / "src" / ".ssh").mkdir()
    time.sleep(TICK_S)
    (root / "src").rename(tmp_path / "old-src")
    (other / "src").rename(root / "src")
    assert _found(root) == {"src/.ssh"}
    # and a folder swapped for a link is not followed
    time.sleep(TICK_S)
    (root / "src").rename(tmp_path / "secret-src")
    (root / "src").symlink_to(tmp_path / "secret-src")
    assert _found(root) == set()


def test_what_is_remembered_is_used_only_when_well_formed(
        tmp_path: Path, listed: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "project")
    (root / "nb" / ".ssh").mkdir()
    monkeypatch.setattr(secretscan, "SETTLED_NS", -1)
    assert _found(root) == {"nb/.ssh"}
    kept = secretscan._path(root)
    record = json.loads(kept.read_text())
    assert record["root"] == str(root) and len(record["folders"]) == 8
    for broken in ("not json", json.dumps({**record, "format": 0}),
                   json.dumps({**record, "root": str(tmp_path)}),
                   json.dumps({**record, "folders": {"nb": "x"}})):
        kept.write_text(broken)
        listed.clear()
        assert _found(root) == {"nb/.ssh"}
        assert len(listed) >= 1


def test_the_limit_counts_remembered_entries_too(
        tmp_path: Path, listed: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "big"
    root.mkdir()
    for index in range(20):
        (root / f"f{index}").write_text("x")
    monkeypatch.setattr(secretscan, "SETTLED_NS", -1)
    assert secret_entries(root) == []
    listed.clear()
    with pytest.raises(ValueError, match="more than 10"):
        secret_entries(root, limit=10)
    assert listed == []
