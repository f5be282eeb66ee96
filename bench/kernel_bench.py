"""Kernel speed, measured side by side in one run on the same machine and image.

Rows (each a ratio to its baseline, measured in this same process):
  - `pass` cell round trip: AgentKernel vs a local ipykernel, and vs a per-cell
    `docker exec CONTAINER python3 -c pass`;
  - kernel start to first result: AgentKernel vs a local ipykernel start + `docker run` + one
    exec, done one after another.
Prints a table and writes bench/results/kernel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kernels import install_kernelspec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _quiet(_msg: dict) -> None:
    """Swallow iopub output (execute_interactive would print it)."""


def round_trips(kc, n: int) -> list[float]:
    """Seconds per `pass` execute, reply received (after a warm-up)."""
    for _ in range(5):
        kc.execute_interactive("pass", timeout=60, output_hook=_quiet)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        kc.execute_interactive("pass", timeout=60, output_hook=_quiet)
        times.append(time.perf_counter() - start)
    return times


def start_to_first_result(kernel_name: str) -> tuple[float, KernelManager, object]:
    """Seconds from start_kernel to the reply of the first `1` cell; the kernel stays up."""
    start = time.perf_counter()
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    reply = kc.execute_interactive("1", timeout=120, output_hook=_quiet)
    assert reply["content"]["status"] == "ok", reply
    return time.perf_counter() - start, km, kc


def stop(km: KernelManager, kc) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def cli(engine: str, *args: str) -> str:
    return subprocess.run([engine, *args], check=True, capture_output=True, text=True).stdout


def docker_exec_times(engine: str, image: str, n: int) -> tuple[list[float], float]:
    """Per-cell `ENGINE exec python3 -c pass` times, and `run -d` + one exec, in sequence."""
    start = time.perf_counter()
    container = cli(engine, "run", "-d", "--rm", "--network", "none", "--entrypoint", "sleep",
                    image, "600").strip()
    try:
        cli(engine, "exec", container, "python3", "-c", "pass")
        run_plus_exec = time.perf_counter() - start
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            cli(engine, "exec", container, "python3", "-c", "pass")
            times.append(time.perf_counter() - t0)
    finally:
        subprocess.run([engine, "rm", "-f", container], capture_output=True)
    return times, run_plus_exec


def measure(engine: str, image: str, n: int) -> dict:
    os.environ["AGENTKERNEL_ENGINE"] = engine
    os.environ["AGENTKERNEL_IMAGE"] = image
    local_start, km, kc = start_to_first_result("python3")
    local_rt = round_trips(kc, n)
    stop(km, kc)
    sandbox_start, km, kc = start_to_first_result("agentkernel")
    sandbox_rt = round_trips(kc, n)
    stop(km, kc)
    exec_rt, run_plus_exec = docker_exec_times(engine, image, max(20, n // 10))
    med = statistics.median
    baseline_start = local_start + run_plus_exec
    return {
        "engine": engine,
        "image": image,
        "samples": n,
        "pass_roundtrip_ms": {
            "agentkernel": med(sandbox_rt) * 1e3,
            "local_ipykernel": med(local_rt) * 1e3,
            "docker_exec_per_cell": med(exec_rt) * 1e3,
        },
        "ratio_vs_local_ipykernel": med(sandbox_rt) / med(local_rt),
        "speedup_vs_docker_exec": med(exec_rt) / med(sandbox_rt),
        "start_to_first_result_s": {
            "agentkernel": sandbox_start,
            "local_ipykernel": local_start,
            "run_plus_one_exec": run_plus_exec,
            "baseline_in_sequence": baseline_start,
        },
        "start_ratio_vs_sequence": sandbox_start / baseline_start,
    }


def table(row: dict) -> str:
    rt, st = row["pass_roundtrip_ms"], row["start_to_first_result_s"]
    return "\n".join([
        f"engine {row['engine']}, image {row['image']}, {row['samples']} samples (medians)",
        f"{'what':44} {'agentkernel':>12} {'baseline':>12} {'ratio':>8}",
        f"{'pass cell round trip vs local ipykernel':44} {rt['agentkernel']:10.2f}ms "
        f"{rt['local_ipykernel']:10.2f}ms {row['ratio_vs_local_ipykernel']:7.2f}x",
        f"{'pass cell vs per-cell `exec python3 -c`':44} {rt['agentkernel']:10.2f}ms "
        f"{rt['docker_exec_per_cell']:10.2f}ms {row['speedup_vs_docker_exec']:6.1f}x faster",
        f"{'start to first result vs ipykernel+run+exec':44} {st['agentkernel']:11.2f}s "
        f"{st['baseline_in_sequence']:11.2f}s {row['start_ratio_vs_sequence']:7.2f}x",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", action="append", choices=["docker", "podman"])
    parser.add_argument("--image", default=os.environ.get("AGENTKERNEL_IMAGE",
                                                          "agentkernel-test:latest"))
    parser.add_argument("-n", type=int, default=200, help="round trips per kernel")
    args = parser.parse_args(argv)
    install_kernelspec(Path(tempfile.mkdtemp(prefix="agentkernel-bench-")))
    rows = [measure(engine, args.image, args.n) for engine in args.engine or ["docker"]]
    for row in rows:
        print(table(row), end="\n\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kernel.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written {RESULTS / 'kernel.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
