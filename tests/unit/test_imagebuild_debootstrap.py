"""debootstrap runs dpkg without an fsync per unpacked file (agentkernel/imagebuild.py): the
root is a scratch folder, and those fsyncs were a quarter of the demo's image build here."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkernel import imagebuild


def _debootstrap_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run imagebuild's debootstrap step with a debootstrap that prints its DPKG_FORCE."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "debootstrap"
    fake.write_text('#!/bin/sh\necho "DPKG_FORCE=${DPKG_FORCE-unset}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    lines: list[str] = []
    imagebuild._debootstrap(tmp_path / "root", ["python3"], "bookworm",
                            "http://deb.debian.org/debian", lines.append)
    return lines


def test_dpkg_runs_with_unsafe_io_and_its_default_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DPKG_FORCE", raising=False)
    assert _debootstrap_env(tmp_path, monkeypatch) == ["DPKG_FORCE=security-mac,unsafe-io"]


def test_a_dpkg_force_of_the_caller_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DPKG_FORCE", "security-mac")
    assert _debootstrap_env(tmp_path, monkeypatch) == ["DPKG_FORCE=security-mac"]
