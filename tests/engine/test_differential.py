"""IPython fidelity, measured: the differential corpus on the local ``python3`` kernel and on
AgentKernel, compared cell by cell (tests/helpers/differential.py).

The corpus (tests/differential/project: notebooks written by tests/differential/make_notebooks.py
in its ``notebooks/``, beside ``data/``, ``images/`` and ``src/``) runs once per session on
``python3`` (ipykernel in this venv, with the IPython agentkernel gives the test image:
``helpers.differential.reference_env``) and twice per engine on ``agentkernel`` (the kernel's
default workspace: the project, a git repository, copy-on-write at its own path), each notebook in a
fresh copy of the project:

- with an operator policy trusting sandbox output, to measure IPython itself: the cause table
  and the percentage of equal cells are printed (visible without ``-s``) and written with every
  differing cell to tests/artifacts/differential-<engine>.txt; below 98% the test fails;
- with the default output policy (sanitised HTML, scripts in sandboxed frames, unknown mime
  types dropped): the same report goes to differential-<engine>-sanitised.txt, and every cell
  must read the same as in the trusted run once markup is set aside (status, errors, streams,
  text/plain, images, pager): the sanitiser may only change what the browser renders as markup.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers.differential import (
    REFERENCE_KERNEL,
    Context,
    NotebookRun,
    Report,
    cell_view,
    compare_cells,
    compare_runs,
    plain_view,
    reference_env,
    run_corpus,
)
from helpers.differential_causes import cause_of
from helpers.kernels import KERNEL_NAME

pytestmark = [pytest.mark.engine, pytest.mark.timeout(2400)]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REQUIRED_RATIO = 0.98
# The default policy (the project copy-on-write: cells write beside the notebook, the host's
# files stay as they are), and the same with sandbox output trusted by the operator.
SANITISED: dict = {"SandboxPolicy": {}}
TRUSTED = {"SandboxPolicy": {"trust_output": True}}
Runs = tuple[list[NotebookRun], float]


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The corpus on the local python3 kernel, once per session, and the seconds it took."""
    start = time.monotonic()
    runs = run_corpus(REFERENCE_KERNEL, tmp_path_factory.mktemp("differential-python3"),
                      env=reference_env())
    failed = [f"{r.name}: {r.failure}" for r in runs if r.failure]
    assert not failed, f"the reference kernel could not run the corpus: {failed}"
    return runs, time.monotonic() - start


@pytest.fixture(scope="session")
def agentkernel_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Runs]:
    """The corpus on agentkernel, by (engine, policy), filled by ``corpus_on``."""
    return {}


def corpus_on(cache: dict[tuple[str, str], Runs], engine_name: str, policy_name: str,
              folder: Path) -> Runs:
    """The corpus on agentkernel under one policy (run once per engine and policy)."""
    if (engine_name, policy_name) not in cache:
        policy = folder / f"policy-{policy_name}.json"
        policy.write_text(json.dumps({"trusted": TRUSTED, "sanitised": SANITISED}[policy_name]))
        start = time.monotonic()
        runs = run_corpus(KERNEL_NAME, folder / f"runs-{policy_name}",
                          env={**os.environ, "AGENTKERNEL_POLICY": str(policy)})
        cache[engine_name, policy_name] = runs, time.monotonic() - start
    return cache[engine_name, policy_name]


def publish(report: Report, title: str, artifact: str, capsys: pytest.CaptureFixture[str]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / artifact).write_text(report.render(title, details=True))
    with capsys.disabled():
        print("\n" + report.render(title), flush=True)


def test_ipython_fidelity(engine_name: str, test_image: str, kernelspec: None,
                          reference_runs: Runs, agentkernel_runs: dict[tuple[str, str], Runs],
                          tmp_path_factory: pytest.TempPathFactory,
                          capsys: pytest.CaptureFixture[str]) -> None:
    reference, reference_seconds = reference_runs
    runs, seconds = corpus_on(agentkernel_runs, engine_name, "trusted",
                              tmp_path_factory.mktemp(f"differential-{engine_name}"))
    report = compare_runs(reference, runs, cause_of)
    publish(report, f"IPython fidelity of agentkernel on {engine_name}, output trusted: "
                    f"{len(runs)} notebooks (python3 {reference_seconds:.0f} s, "
                    f"agentkernel {seconds:.0f} s)", f"differential-{engine_name}.txt", capsys)
    assert report.ratio >= REQUIRED_RATIO, (
        f"{report.summary()}; {100 * REQUIRED_RATIO:.0f}% required; causes in "
        f"tests/artifacts/differential-{engine_name}.txt")


def test_the_sanitiser_changes_only_markup(engine_name: str, test_image: str, kernelspec: None,
                                           reference_runs: Runs,
                                           agentkernel_runs: dict[tuple[str, str], Runs],
                                           tmp_path_factory: pytest.TempPathFactory,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    reference, reference_seconds = reference_runs
    folder = tmp_path_factory.mktemp(f"differential-{engine_name}")
    trusted, _ = corpus_on(agentkernel_runs, engine_name, "trusted", folder)
    sanitised, seconds = corpus_on(agentkernel_runs, engine_name, "sanitised", folder)
    publish(compare_runs(reference, sanitised, cause_of),
            f"IPython fidelity of agentkernel on {engine_name}, default output policy: "
            f"{len(sanitised)} notebooks (python3 {reference_seconds:.0f} s, "
            f"agentkernel {seconds:.0f} s)", f"differential-{engine_name}-sanitised.txt", capsys)
    changed = []
    for run_t, run_s in zip(trusted, sanitised, strict=True):
        assert not run_s.failure, f"{run_s.name} stopped early: {run_s.failure}"
        ctx_t, ctx_s = Context.of(run_t), Context.of(run_s)
        for cell_t, cell_s in zip(run_t.cells, run_s.cells, strict=True):
            difference = compare_cells(plain_view(cell_view(cell_t, ctx_t)),
                                       plain_view(cell_view(cell_s, ctx_s)))
            if difference:
                changed.append(f"{run_s.name}[{cell_s.index}]: {difference}")
    assert not changed, f"the sanitiser changed more than markup: {changed}"
