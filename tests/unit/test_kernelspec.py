"""Tests of the kernelspec builder and installer (no kernel is started)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from agentkernel_kernel import kernelspec
from agentkernel_kernel.kernelspec import (
    DISPLAY_NAME,
    LOGOS,
    RESOURCES,
    install,
    kernel_dict,
    make_argv,
    write_kernel_spec,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def kernels_dir(prefix: Path) -> Path:
    """Where jupyter_client installs kernelspecs under an install prefix."""
    return prefix / "share" / "jupyter" / "kernels"


def test_make_argv():
    assert make_argv() == [sys.executable, "-P", "-m", "agentkernel_kernel", "-f",
                           "{connection_file}"]
    assert make_argv("/opt/py/bin/python")[0] == "/opt/py/bin/python"


def test_kernel_dict_fields():
    spec = kernel_dict()
    assert spec == {
        "argv": make_argv(),
        "display_name": "AgentKernel Sandbox",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {"debugger": False},
    }


def test_kernel_dict_extra_env_and_names():
    env = {"AGENTKERNEL_PROFILE": "restrictive"}
    spec = kernel_dict("/py", display_name="Sandbox (strict)", env=env)
    assert spec["env"] == env
    assert spec["env"] is not env
    assert spec["display_name"] == "Sandbox (strict)"
    assert spec["argv"][0] == "/py"


@pytest.mark.parametrize(("logo", "size"), [("logo-32x32.png", 32), ("logo-64x64.png", 64)])
def test_png_logos_have_their_size(logo, size):
    data = (RESOURCES / logo).read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (size, size)


def test_svg_logo_is_square_svg():
    text = (RESOURCES / "logo-svg.svg").read_text(encoding="utf-8")
    assert text.startswith("<svg ") and 'viewBox="0 0 64 64"' in text


def test_write_kernel_spec(tmp_path):
    path = Path(write_kernel_spec(tmp_path / "spec", env={"A": "1"}))
    assert sorted(p.name for p in path.iterdir()) == sorted([*LOGOS, "kernel.json"])
    assert json.loads((path / "kernel.json").read_text()) == kernel_dict(env={"A": "1"})
    for logo in LOGOS:
        assert (path / logo).read_bytes() == (RESOURCES / logo).read_bytes()


def test_write_kernel_spec_to_a_temporary_directory():
    path = Path(write_kernel_spec())
    try:
        assert path.name == "agentkernel"
        assert (path / "kernel.json").is_file()
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
        path.parent.rmdir()


def test_install_into_prefix_is_found_by_jupyter(tmp_path):
    dest = Path(install(prefix=str(tmp_path)))
    assert dest == kernels_dir(tmp_path) / "agentkernel"
    spec = json.loads((dest / "kernel.json").read_text())
    assert spec["argv"] == make_argv()
    assert spec["interrupt_mode"] == "signal"
    assert spec["metadata"] == {"debugger": False}
    for logo in LOGOS:
        assert (dest / logo).is_file()

    manager = KernelSpecManager(kernel_dirs=[str(kernels_dir(tmp_path))])
    assert manager.find_kernel_specs()["agentkernel"] == str(dest)
    found = manager.get_kernel_spec("agentkernel")
    assert found.display_name == DISPLAY_NAME
    assert found.language == "python"
    assert found.interrupt_mode == "signal"
    assert found.argv == make_argv()
    assert found.metadata == {"debugger": False}


def test_install_replaces_an_existing_spec_and_takes_names(tmp_path):
    install(prefix=str(tmp_path), kernel_name="sandbox2")
    dest = Path(install(prefix=str(tmp_path), kernel_name="sandbox2", display_name="Box Two"))
    assert dest.name == "sandbox2"
    manager = KernelSpecManager(kernel_dirs=[str(kernels_dir(tmp_path))])
    assert manager.get_kernel_spec("sandbox2").display_name == "Box Two"


def test_install_sys_prefix_goes_to_sys_prefix(monkeypatch, tmp_path):
    monkeypatch.setattr(kernelspec.sys, "prefix", str(tmp_path))
    assert Path(install(sys_prefix=True)) == kernels_dir(tmp_path) / "agentkernel"


def test_install_refuses_two_destinations(tmp_path):
    with pytest.raises(ValueError, match="at most one"):
        install(user=True, prefix=str(tmp_path))


def test_main_installs_and_reports(tmp_path, capsys):
    kernelspec.main(["--prefix", str(tmp_path), "--name", "ak", "--display-name", "AK"])
    dest = kernels_dir(tmp_path) / "ak"
    assert capsys.readouterr().out == f"Installed kernelspec ak in {dest}\n"
    assert json.loads((dest / "kernel.json").read_text())["display_name"] == "AK"


def test_main_defaults_to_user_install_when_not_root(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(kernelspec, "_is_root", lambda: False)
    monkeypatch.setattr(kernelspec, "install", lambda **kwargs: calls.append(kwargs) or "x")
    kernelspec.main([])
    assert calls[0]["user"] is True
    monkeypatch.setattr(kernelspec, "_is_root", lambda: True)
    kernelspec.main([])
    assert calls[1]["user"] is False


def test_main_refuses_two_destinations(tmp_path, capsys):
    with pytest.raises(SystemExit):
        kernelspec.main(["--user", "--prefix", str(tmp_path)])
    assert "not allowed with argument" in capsys.readouterr().err


def test_module_install_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agentkernel_kernel", "install", "--prefix", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    dest = kernels_dir(tmp_path) / "agentkernel"
    assert result.stdout == f"Installed kernelspec agentkernel in {dest}\n"
    assert (dest / "kernel.json").is_file()
