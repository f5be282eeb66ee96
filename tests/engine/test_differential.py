"""IPython fidelity, measured: the differential corpus on the local ``python3`` kernel and on
AgentKernel, compared cell by cell (tests/helpers/differential.py).

The corpus (tests/differential/notebooks, written by tests/differential/make_notebooks.py) runs
once per session on ``python3`` (ipykernel in this venv) and once per engine on ``agentkernel``,
each notebook in a fresh copy of the corpus folder. The cause table and the percentage of equal
cells are printed (visible without ``-s``) and written with every differing cell to
tests/artifacts/differential-<engine>.txt. Below 98% equal cells the test fails.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers.differential import (
    REFERENCE_KERNEL,
    NotebookRun,
    compare_runs,
    run_corpus,
)
from helpers.differential_causes import cause_of
from helpers.kernels import KERNEL_NAME

pytestmark = [pytest.mark.engine, pytest.mark.timeout(1200)]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REQUIRED_RATIO = 0.98
# An operator policy letting the notebook's folder be writable in the sandbox, as a user's
# notebook folder is for the local kernel ("{notebook}" is the notebook's folder).
POLICY = {"SandboxPolicy": {"host_folders": ["{notebook}:rw"]}}


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[NotebookRun], float]:
    """The corpus on the local python3 kernel, once per session, and the seconds it took."""
    start = time.monotonic()
    runs = run_corpus(REFERENCE_KERNEL, tmp_path_factory.mktemp("differential-python3"))
    failed = [f"{r.name}: {r.failure}" for r in runs if r.failure]
    assert not failed, f"the reference kernel could not run the corpus: {failed}"
    return runs, time.monotonic() - start


def test_ipython_fidelity(engine_name: str, test_image: str, kernelspec: None,
                          reference_runs: tuple[list[NotebookRun], float],
                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference, reference_seconds = reference_runs
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    start = time.monotonic()
    runs = run_corpus(KERNEL_NAME, tmp_path / "runs",
                      env={**os.environ, "AGENTKERNEL_POLICY": str(policy)})
    seconds = time.monotonic() - start

    report = compare_runs(reference, runs, cause_of)
    title = (f"IPython fidelity of agentkernel on {engine_name}: {len(runs)} notebooks "
             f"(python3 {reference_seconds:.0f} s, agentkernel {seconds:.0f} s)")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"differential-{engine_name}.txt").write_text(report.render(title, details=True))
    with capsys.disabled():
        print("\n" + report.render(title), flush=True)
    ratio = report.ratio
    assert ratio >= REQUIRED_RATIO, (
        f"{report.summary()}; {100 * REQUIRED_RATIO:.0f}% required; causes in "
        f"tests/artifacts/differential-{engine_name}.txt")
