"""`pip install agentkernel` alone makes Jupyter list the AgentKernel Sandbox kernel.

As ipykernel's wheel does for `python3`, ours ships the kernelspec as data files
(`share/jupyter/kernels/agentkernel`, from `data_kernelspec/` and the package's logos). The
test builds a wheel of this tree, installs it into a fresh venv from the wheels set-up collected
(`.venv/wheels`, no index), and asks that venv's `jupyter kernelspec list`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentkernel_kernel.kernelspec import KERNEL_NAME, LOGOS, RESOURCES, kernel_dict

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "data_kernelspec" / "kernel.json"
WHEELS = Path(sys.prefix) / "wheels"  # filled by scripts/setup.sh
STEP_TIMEOUT_S = 240


def test_the_shipped_kernel_json_is_the_installers_with_python() -> None:
    """The wheel's kernel.json is what `install` writes, with "python" (which jupyter_client
    replaces with its own interpreter) in place of this venv's absolute path."""
    regenerate = ("regenerate it: python -c \"import json; from agentkernel_kernel.kernelspec "
                  "import kernel_dict; open('data_kernelspec/kernel.json', 'w').write("
                  "json.dumps(kernel_dict('python'), indent=1) + '\\n')\"")
    assert json.loads(SHIPPED.read_text()) == kernel_dict("python"), regenerate


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT_S)
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(3 * STEP_TIMEOUT_S)
def test_a_wheel_install_alone_lists_the_kernel(tmp_path: Path) -> None:
    assert (WHEELS / ".complete").exists(), f"{WHEELS} missing: run scripts/setup.sh"
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(WHEELS), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    started = time.monotonic()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
          str(ROOT)], env, tmp_path)
    wheel = next((tmp_path / "dist").glob("agentkernel-*.whl"))
    built = time.monotonic()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env, tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)],
         env, tmp_path)
    installed = time.monotonic()

    listed = json.loads(_run([str(venv / "bin" / "jupyter"), "kernelspec", "list", "--json"],
                             env, tmp_path))["kernelspecs"]
    assert KERNEL_NAME in listed, sorted(listed)
    found = listed[KERNEL_NAME]
    assert Path(found["resource_dir"]) == venv / "share" / "jupyter" / "kernels" / KERNEL_NAME
    assert found["spec"]["display_name"] == "AgentKernel Sandbox"
    assert found["spec"]["argv"] == kernel_dict("python")["argv"]
    for logo in LOGOS:
        assert (Path(found["resource_dir"]) / logo).read_bytes() == (RESOURCES / logo).read_bytes()
    # jupyter_client runs the kernel with the Python it runs on: the venv's, which has agentkernel
    command = _run([str(python), "-c", "from jupyter_client.manager import KernelManager; "
                    f"print(KernelManager(kernel_name={KERNEL_NAME!r}).format_kernel_cmd()[0])"],
                   env, tmp_path)
    assert Path(command.strip()) == python
    print(f"\nwheel built in {built - started:.1f} s, installed into a fresh venv in "
          f"{installed - built:.1f} s")
