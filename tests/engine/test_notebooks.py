"""The shipped notebooks, run by real tools in the AgentKernel Sandbox kernel, on each engine.

- papermill's Python API and its command line (parameters, failure exit codes),
- ``jupyter nbconvert --execute``,
- ``jupyter console`` fed through a pipe.

The quickstart runs under the default policy, as `scripts/demo` and a new user run it (the other
notebooks under the engine tests' lab policy). Its published port is fetched from the host while
the kernel still runs, from an nbclient ``on_cell_executed`` hook that papermill passes through
to its notebook client.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from helpers.engines import RUN_ID, RUN_LABEL
from helpers.kernels import KERNEL_NAME
from helpers.policies import DEFAULT

from agentkernel.engine import Engine

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]  # the repository
QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"
CI_EXAMPLE = ROOT / "notebooks" / "ci_example.ipynb"
BIN = Path(sys.executable).parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PORT_LINE = re.compile(r"^127\.0\.0\.1:(\d+) -> 8000/tcp$", re.MULTILINE)
CONTAINER_ID = re.compile(r"[0-9a-f]{12}")
EXECUTION_TIMEOUT = 120  # s per cell
STARTUP_TIMEOUT = 120  # s: the kernel starts its sandbox before it answers
SUBPROCESS_TIMEOUT = 240
CONTAINER_GONE_TIMEOUT = 15  # s after the kernel is shut down


@pytest.fixture(scope="module", autouse=True)
def _kernelspec(kernelspec: None) -> None:
    """The kernelspec, first on JUPYTER_PATH (subprocesses inherit it)."""


@pytest.fixture
def ready(engine_name: str, test_image: str, engine: Engine) -> Iterator[Engine]:
    """The engine under test, with AGENTKERNEL_ENGINE / AGENTKERNEL_IMAGE set for kernels;
    afterwards no container of this run may still run that was not running before."""
    before = {c["Id"] for c in running_run_containers(engine)}
    yield engine
    deadline = time.monotonic() + CONTAINER_GONE_TIMEOUT
    while left := [c["Id"][:12] for c in running_run_containers(engine)
                   if c["Id"] not in before]:
        assert time.monotonic() < deadline, f"containers still running after the run: {left}"
        time.sleep(0.25)


# -- reading notebooks ----------------------------------------------------------------------------
def running_run_containers(engine: Engine) -> list[dict]:
    """Running containers made during this test run."""
    return engine.api.containers(filters={"label": f"{RUN_LABEL}={RUN_ID}"})


def code_cell(nb: Any, prefix: str) -> Any:
    """The one code cell whose source starts with ``prefix``."""
    found = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(prefix)]
    assert len(found) == 1, f"{len(found)} code cells start with {prefix!r}"
    return found[0]


def text_of(cell: Any) -> str:
    """Everything a cell printed, then its text/plain results, as one string."""
    parts = [o.text for o in cell.outputs if o.output_type == "stream"]
    parts += [o.data.get("text/plain", "") for o in cell.outputs
              if o.output_type in ("execute_result", "display_data")]
    return "".join(parts)


def data_of(cell: Any, mime: str) -> list[Any]:
    """Every ``mime`` payload among the cell's rich outputs."""
    return [o.data[mime] for o in cell.outputs
            if o.output_type in ("execute_result", "display_data") and mime in o.data]


def errors_of(nb: Any) -> list[str]:
    """``ename: evalue`` of every error output in the notebook."""
    return [f"{o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


# -- running tools ---------------------------------------------------------------------------------
def run_papermill(source: Path, output: Path, **kwargs: Any) -> Any:
    """papermill.execute_notebook in the agentkernel kernel; returns the executed notebook."""
    return papermill.execute_notebook(
        str(source), str(output), kernel_name=KERNEL_NAME, progress_bar=False,
        cwd=str(output.parent), start_timeout=STARTUP_TIMEOUT,
        execution_timeout=EXECUTION_TIMEOUT, **kwargs,
    )


def run_tool(argv: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run a command line tool of the venv, stdout and stderr together as text."""
    return subprocess.run(
        argv, cwd=cwd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=SUBPROCESS_TIMEOUT, env=os.environ.copy(),
    )


class HostFetch:
    """An nbclient ``on_cell_executed`` hook: after ``%sandbox ports``, GET the published port
    from the host while the sandbox still serves."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.body: str | None = None
        self.error: str | None = None

    def __call__(self, cell: Any, cell_index: int, execute_reply: dict, **_: Any) -> None:
        if cell.cell_type != "code" or not cell.source.startswith("%sandbox ports"):
            return
        match = PORT_LINE.search(text_of(cell))
        if match is None:
            self.error = f"no port line in {text_of(cell)!r}"
            return
        self.port = int(match[1])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=10) as reply:
                self.body = reply.read().decode()
        except OSError as err:
            self.error = f"GET 127.0.0.1:{self.port} failed: {err}"


# -- quickstart ------------------------------------------------------------------------------------
def test_quickstart_with_papermill(ready: Engine, engine_name: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DEFAULT.items():  # no policy file: the limits any user starts with
        monkeypatch.setenv(name, value)
    fetch = HostFetch()
    nb = run_papermill(QUICKSTART, tmp_path / "quickstart.ipynb", on_cell_executed=fetch)
    assert errors_of(nb) == []

    for line in ("%sandbox start -p 8000", "%sandbox resize 2 1024"):  # as the product says them
        assert code_cell(nb, line).source == line
    started = text_of(code_cell(nb, "%sandbox start"))
    assert "1 CPU, 512 MB" in started and f"; {engine_name})" in started
    state = text_of(code_cell(nb, "visits += 1"))
    hostname = re.search(r"host (\S+),", state)[1]
    assert CONTAINER_ID.fullmatch(hostname) and hostname != socket.gethostname()
    assert state.rstrip().endswith("visit 1")
    stream = text_of(code_cell(nb, "import time"))
    assert stream == "".join(f"step {i}/5\n" for i in range(1, 6)) + "done\n"

    pngs = data_of(code_cell(nb, "%matplotlib inline"), "image/png")
    assert len(pngs) == 1 and base64.b64decode(pngs[0]).startswith(PNG_SIGNATURE)
    html = "".join(data_of(code_cell(nb, "import pandas"), "text/html"))
    assert "<table" in html and "Lisbon" in html and "temp_f" in html

    assert "wrote /tmp/hello.py" in text_of(code_cell(nb, "%%sandbox_file /tmp/hello.py"))
    assert text_of(code_cell(nb, "!python3")) == "hello.py says hi to Ada, Grace\r\n"  # a pty
    assert "2 CPU, 1024 MB (verified in the cgroup)" in text_of(code_cell(nb, "%sandbox resize"))
    status = text_of(code_cell(nb, "%sandbox status"))
    assert "limits  cpus 2, memory 1024 MB" in status and f"({engine_name}," in status

    assert text_of(code_cell(nb, "import urllib")) == f"hello from {hostname}\n"
    ports = PORT_LINE.search(text_of(code_cell(nb, "%sandbox ports")))
    assert ports and f"port    {ports[0]}" in status
    assert fetch.error is None and fetch.body == f"hello from {hostname}\n"
    assert "stopped" in text_of(code_cell(nb, "%sandbox stop"))


# -- ci_example ------------------------------------------------------------------------------------
def test_ci_example_parameters(ready: Engine, tmp_path: Path) -> None:
    nb = run_papermill(CI_EXAMPLE, tmp_path / "ci.ipynb", parameters={"n": 5})
    assert errors_of(nb) == []
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "n = 5" in injected[0].source
    assert "running in a container: True" in text_of(code_cell(nb, "import os"))
    result = text_of(code_cell(nb, "def first_primes"))
    assert result == "result for n=5: primes [2, 3, 5, 7, 11], sum of squares 55\n"
    assert '"sum_of_squares": 55' in text_of(code_cell(nb, "import json"))
    assert text_of(code_cell(nb, "class ReportCheckFailed")) == "check passed\n"


def test_ci_example_failure_raises(ready: Engine, tmp_path: Path) -> None:
    output = tmp_path / "ci-fail.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        run_papermill(CI_EXAMPLE, output, parameters={"fail": True})
    assert caught.value.ename == "ReportCheckFailed"
    assert "ReportCheckFailed: check failed for n=3" in str(caught.value)
    saved = nbformat.read(output, as_version=4)
    assert errors_of(saved) == ["ReportCheckFailed: check failed for n=3 (fail=True was "
                                "requested)"]


def test_papermill_command_line(ready: Engine, tmp_path: Path) -> None:
    papermill_cli = str(BIN / "papermill")
    ok = run_tool([papermill_cli, str(CI_EXAMPLE), "out.ipynb", "-k", KERNEL_NAME,
                   "-p", "n", "5", "--no-progress-bar"], tmp_path)
    assert ok.returncode == 0, ok.stdout[-3000:]
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "result for n=5: primes [2, 3, 5, 7, 11]" in text_of(code_cell(nb, "def first"))

    failed = run_tool([papermill_cli, str(CI_EXAMPLE), "fail.ipynb", "-k", KERNEL_NAME,
                       "-p", "fail", "True", "--no-progress-bar"], tmp_path)
    assert failed.returncode != 0
    assert "PapermillExecutionError" in failed.stdout
    assert "ReportCheckFailed: check failed for n=3" in failed.stdout


def test_nbconvert_execute(ready: Engine, tmp_path: Path) -> None:
    done = run_tool([str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                     f"--ExecutePreprocessor.kernel_name={KERNEL_NAME}",
                     f"--ExecutePreprocessor.startup_timeout={STARTUP_TIMEOUT}",
                     "--output-dir", str(tmp_path), "--output", "ci-nbconvert",
                     str(CI_EXAMPLE)], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    nb = nbformat.read(tmp_path / "ci-nbconvert.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == KERNEL_NAME and errors_of(nb) == []
    assert text_of(code_cell(nb, "def first")).startswith("result for n=3: primes [2, 3, 5]")


def test_jupyter_console(ready: Engine, tmp_path: Path) -> None:
    code = "import socket\nprint('answer', 6 * 7, socket.gethostname())\n"
    done = run_tool([str(BIN / "jupyter"), "console", "--kernel", KERNEL_NAME,
                     "--simple-prompt", "--ZMQTerminalInteractiveShell.confirm_exit=False",
                     f"--ZMQTerminalInteractiveShell.kernel_timeout={STARTUP_TIMEOUT}"],
                    tmp_path, stdin=code)
    assert done.returncode == 0, done.stdout[-3000:]
    answer = re.search(r"answer 42 (\S+)", done.stdout)
    assert answer, done.stdout[-3000:]
    assert CONTAINER_ID.fullmatch(answer[1]) and answer[1] != socket.gethostname()
