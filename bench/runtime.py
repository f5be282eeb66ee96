"""What gVisor (runsc) costs a kernel, against runc, in one run on the same machine and image.

Rows, each a ratio runsc / runc (or runc / runsc for a throughput), per engine:
  1. kernel start to first result, cold (the median of several, runc and runsc alternated)
  2. `pass` cell round trip (median)
  3. printing 50 MB from a cell (throughput)
gVisor sandboxes come from `agentkernel runtime setup runsc` (scripts/setup.sh): on Docker the
registered runtime, on Podman the service whose default runtime it is (Podman's API cannot
choose one per container). Prints the table and writes bench/results/runtime.json.

    AGENTKERNEL_IMAGE=agentkernel-test:latest .venv/bin/python bench/runtime.py \\
        --engine docker --engine podman
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.kernels import install_kernelspec  # noqa: E402

from bench import FLOOD_MB, RESULTS, flood, round_trips, start_to_first_result  # noqa: E402

PODMAN_RUNSC = "unix:///run/podman/podman-runsc.sock"
RUNTIMES = ("runc", "runsc")


@contextmanager
def runtime_env(engine: str, runtime: str) -> Iterator[None]:
    """The environment a kernel of ``engine`` under ``runtime`` is started with."""
    saved = {name: os.environ.get(name) for name in ("AGENTKERNEL_RUNTIME", "CONTAINER_HOST")}
    os.environ["AGENTKERNEL_ENGINE"] = engine
    os.environ.pop("AGENTKERNEL_RUNTIME", None)
    os.environ.pop("CONTAINER_HOST", None)
    if runtime == "runsc":
        os.environ["AGENTKERNEL_RUNTIME"] = "runsc"
        if engine == "podman":
            os.environ["CONTAINER_HOST"] = PODMAN_RUNSC
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def measure(engine: str, starts: int, n: int) -> dict[str, Any]:
    """Both runtimes' figures on ``engine``: starts alternated, then round trips and flood."""
    seconds: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
    kept: dict[str, Any] = {}
    for sample in range(starts):
        for runtime in RUNTIMES:
            with runtime_env(engine, runtime):
                took, kernel = start_to_first_result("agentkernel")
            seconds[runtime].append(took)
            if sample == starts - 1:
                kept[runtime] = kernel
            else:
                kernel.stop()
            time.sleep(1.0)
    figures: dict[str, dict[str, float]] = {}
    for runtime in RUNTIMES:
        kernel = kept[runtime]
        figures[runtime] = {"start_s": statistics.median(seconds[runtime]),
                            "starts_s": seconds[runtime],
                            "pass_ms": round_trips(kernel, n) * 1e3,
                            "flood_mb_s": flood(kernel)[0]}
        kernel.stop()
    runc, runsc = figures["runc"], figures["runsc"]
    return {"engine": engine, "figures": figures, "rows": [
        row("start to first result, cold", runsc["start_s"], runc["start_s"], "s"),
        row("pass cell round trip", runsc["pass_ms"], runc["pass_ms"], "ms"),
        row(f"print {FLOOD_MB} MB, throughput", runsc["flood_mb_s"], runc["flood_mb_s"], "MB/s",
            slower_is_more=False),
    ]}


def row(what: str, runsc: float, runc: float, unit: str,
        slower_is_more: bool = True) -> dict[str, Any]:
    """One row: the cost ratio, > 1 when gVisor is slower."""
    ratio = runsc / runc if slower_is_more else runc / runsc
    return {"what": what, "unit": unit, "runsc": runsc, "runc": runc, "cost": ratio}


def table(results: dict[str, Any], starts: int, n: int) -> str:
    lines = [f"engine {results['engine']}: runsc (gVisor, ptrace platform) vs runc, {starts} "
             f"cold starts each (median), {n} round trips",
             f"{'what':30} {'runsc':>10} {'runc':>10} {'unit':5} {'cost (runsc/runc)':>18}"]
    lines += [f"{r['what']:30} {r['runsc']:10.2f} {r['runc']:10.2f} {r['unit']:5} "
              f"{r['cost']:17.2f}x" for r in results["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", action="append", choices=["docker", "podman"])
    parser.add_argument("--starts", type=int, default=5, help="cold starts per runtime")
    parser.add_argument("-n", type=int, default=200, help="round trips per kernel")
    parser.add_argument("--results", default="runtime",
                        help="name of the results file (runtime: runtime.json)")
    args = parser.parse_args(argv)
    install_kernelspec(Path(tempfile.mkdtemp(prefix="agentkernel-bench-runtime-")))
    os.environ.setdefault("AGENTKERNEL_IMAGE", "agentkernel-test:latest")
    everything = []
    for engine in args.engine or ["docker"]:
        results = measure(engine, args.starts, args.n)
        print(table(results, args.starts, args.n), end="\n\n", flush=True)
        everything.append(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(everything, indent=2) + "\n")
    print(f"written {RESULTS / args.results}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
