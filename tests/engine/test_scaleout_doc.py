"""docs/scale-out.md, section 1, followed as a reader would: its commands, in order.

The commands come from the section's bash blocks (so the doc and this test cannot drift): fresh
venvs for agentkernel (`agentkernel[gateway]`, from a wheel of this tree) and for Enterprise
Gateway, our kernelspec in the gateway's prefix, the variables it exports, then the gateway
itself. Only a reader's own choices are replaced, each asserted present in the doc: the
install folders (a temporary one), the gateway's address and port (loopback, a free port), the
image and engine under test. pip runs without an index, from the wheels set-up collected. The
test, run as root, exports what the doc tells a root gateway to. Then a client does what the
doc's `jupyter lab --gateway-url ... --GatewayClient.auth_token ...` does: with the token the
gateway host made, it starts our kernel and runs cells in its sandbox; without it, it is refused.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers.gateway import GATEWAY_VENV, Gateway, free_port

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "scale-out.md"
SECTION = "## 1. Enterprise Gateway serves the kernel"
ROOT_GATEWAY = "export EG_UNAUTHORIZED_USERS=nobody"  # the doc's advice for a root gateway
WHEELS = (Path(sys.prefix) / "wheels", GATEWAY_VENV / "wheels")  # scripts/setup.sh
INSTALL_TIMEOUT_S = 600
ANSWER_TIMEOUT_S = 120


def doc_blocks() -> list[list[str]]:
    """The bash blocks of section 1, as lists of commands (continuation lines joined, comments
    dropped)."""
    section = DOC.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        lines = (re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines())
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def replaced(command: str, choices: dict[str, str]) -> str:
    for text, value in choices.items():
        command = command.replace(text, value)
    return command


@pytest.mark.timeout(2 * INSTALL_TIMEOUT_S)
def test_the_gateway_recipe_runs_as_written(engine_name: str, test_image: str,
                                            tmp_path: Path) -> None:
    server, client = doc_blocks()
    assert ROOT_GATEWAY in DOC.read_text()
    for wheels in WHEELS:
        assert (wheels / ".complete").exists(), f"{wheels} missing: run scripts/setup.sh"
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(ROOT)], check=True, timeout=INSTALL_TIMEOUT_S,
                   env={**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELS[0])})
    port = free_port()
    choices = {  # the reader's choices, made for this machine
        "/opt/agentkernel": str(tmp_path / "agentkernel"),
        "/opt/eg": str(tmp_path / "eg"),
        "--ip=0.0.0.0": "--ip=127.0.0.1",
        "--port=8888": f"--port={port}",
        "http://192.0.2.10:8888": f"http://127.0.0.1:{port}",
        "192.0.2.10": "127.0.0.1",
        "AGENTKERNEL_ENGINE=docker": f"AGENTKERNEL_ENGINE={engine_name}",
        "AGENTKERNEL_IMAGE=python:3.12-slim": f"AGENTKERNEL_IMAGE={test_image}",
    }
    script = "\n".join(server)
    for text in choices:
        assert text in script or text in "\n".join(client), f"the doc no longer says {text!r}"
    commands = [replaced(c, choices) for c in server]
    assert "enterprisegateway" in commands[-1], "the section's first block ends by starting it"
    script = "\n".join(["set -euo pipefail", ROOT_GATEWAY, *commands[:-1], "exec " + commands[-1]])
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": " ".join(str(w) for w in (dist, *WHEELS)),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_COMPILE": "1"}
    log_path = tmp_path / "recipe.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["bash", "-c", script], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=tmp_path,
                                   start_new_session=True)
    gateway = Gateway(f"http://127.0.0.1:{port}", process, log_path)
    try:
        token = wait_for_token(gateway)
        laptop = replaced(client[0], choices)
        assert f"--gateway-url={gateway.url}" in laptop and "--GatewayClient.auth_token" in laptop
        refused_without_token(gateway)
        gateway.token = token
        specs = gateway.request("GET", "/api/kernelspecs")["kernelspecs"]
        argv = specs["agentkernel"]["spec"]["argv"]
        assert argv[0] == str(tmp_path / "agentkernel" / "bin" / "python"), argv
        kernel = gateway.connect(gateway.start_kernel("agentkernel", timeout=ANSWER_TIMEOUT_S))
        try:
            run = kernel.execute("import socket; socket.gethostname()")
            assert run.status == "ok" and run.result["text/plain"].strip("'") != os.uname()[1]
            status = kernel.execute("%sandbox status").stream()
            assert f"({engine_name}," in status and test_image in status, status
        finally:
            kernel.shutdown()
        # section 2's kernels run our launcher from this venv: its reply needs cryptography
        launcher = subprocess.run(
            [str(tmp_path / "agentkernel" / "bin" / "python"), "-c",
             "import cryptography.hazmat.primitives.ciphers, agentkernel_kernel.gateway_launcher"],
            capture_output=True, text=True, timeout=60)
        assert launcher.returncode == 0, launcher.stderr
    finally:
        stop(process)


def wait_for_token(gateway: Gateway) -> str:
    """EG_AUTH_TOKEN as the gateway process has it (the doc's script made it), once the gateway
    answers."""
    deadline = time.monotonic() + INSTALL_TIMEOUT_S
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise AssertionError(f"the recipe stopped: {gateway.log()[-3000:]}")
        try:
            urllib.request.urlopen(f"{gateway.url}/api", timeout=2)
        except urllib.error.HTTPError:
            break  # it answers (and wants the token)
        except OSError:
            time.sleep(0.5)
            continue
        break
    else:
        raise AssertionError(f"no gateway within {INSTALL_TIMEOUT_S} s: {gateway.log()[-3000:]}")
    environ = Path(f"/proc/{gateway.process.pid}/environ").read_bytes().split(b"\0")
    tokens = [v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"EG_AUTH_TOKEN=")]
    assert tokens and len(tokens[0]) == 64, "the gateway runs without the doc's token"
    return tokens[0]


def refused_without_token(gateway: Gateway) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{gateway.url}/api/kernelspecs", timeout=10)
    assert refused.value.code in (401, 403)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, as an operator stops the gateway (it shuts its kernels down first)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
