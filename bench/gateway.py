"""Through Jupyter Enterprise Gateway: the bench rows of docs/scale-out.md, and the figures its
capacity table is projected from. Called by bench.py (its baselines are the direct kernel's,
measured in the same run).

- a `pass` cell round trip through the gateway's websocket (median), with a client that delays
  its ACKs (Linux's default, browsers) and with one that ACKs at once (TCP_QUICKACK); the
  gateway runs with `agentkernel_kernel/gateway_nodelay.py` as its configuration file (its
  websockets write with TCP_NODELAY), as docs/scale-out.md says;
- kernel start to first result through the gateway: LocalProcessProxy (our kernelspec as is)
  and DistributedProcessProxy (our launcher, placed on 127.0.0.1 or over SSH on 127.0.0.2);
- N kernels started at once through the gateway (DistributedProcessProxy): all answer, p50/p99
  of cells sent to all of them at once, host memory per kernel (kernel process RSS, its
  container's cgroup, the gateway's growth), CPU per idle kernel+sandbox and per busy cell.

Run alone (`python bench/gateway.py [-n N]`, on Docker) it measures only the round-trip rows:
direct, through the gateway with the TCP_NODELAY configuration and without it, in one run, and
writes bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.gateway import (  # noqa: E402
    DISTRIBUTED_SPEC,
    LOCAL_SPEC,
    Gateway,
    GatewayKernel,
    running_gateway,
)
from timing import median_start  # noqa: E402

from agentkernel.engine import connect  # noqa: E402
from agentkernel.sandbox import LABEL_OWNER  # noqa: E402

NODELAY_CONFIG = (Path(__file__).resolve().parent.parent / "agentkernel_kernel"
                  / "gateway_nodelay.py")
NODELAY_ARGS = (f"--config={NODELAY_CONFIG}",)
"""The gateway's configuration from docs/scale-out.md: its websockets write with TCP_NODELAY."""
RESULTS = Path(__file__).resolve().parent / "results"

LAUNCH_ENV = {"KERNEL_LAUNCH_TIMEOUT": "600"}  # many launches at once on a small machine
CLK_TCK = 100
IDLE_WINDOW_S = 20.0
WORKING_SET_CODE = (
    "import numpy as np, pandas as pd, matplotlib.pyplot as plt\n"
    "df = pd.DataFrame(np.random.rand(200000, 10))\nr = df.describe()\n"
    "plt.plot(range(100)); plt.show()"
)


def _ok(kernel: GatewayKernel, code: str) -> float:
    start = time.perf_counter()
    run = kernel.execute(code, timeout=600)
    if run.status != "ok":
        raise RuntimeError(f"{code!r} through the gateway failed: {run.error}")
    return time.perf_counter() - start


def start_to_first_result(gateway: Gateway, spec: str) -> tuple[float, GatewayKernel]:
    start = time.perf_counter()
    kernel = gateway.connect(gateway.start_kernel(spec, LAUNCH_ENV, timeout=600))
    _ok(kernel, "1")
    return time.perf_counter() - start, kernel


def round_trips(kernel: GatewayKernel, n: int) -> float:
    for _ in range(10):
        _ok(kernel, "pass")
    return statistics.median(_ok(kernel, "pass") for _ in range(n))


# -- what a kernel costs the host -------------------------------------------------------------
def kernel_pid(kernel_id: str) -> int:
    """The kernel process of ``kernel_id`` (its command line names the id)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if kernel_id.encode() in cmdline and b"agentkernel_kernel" in cmdline:
            return int(proc.name)
    raise RuntimeError(f"no kernel process for {kernel_id}")


def proc_status_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def cgroup_value(container_id: str, controller: str, name: str) -> int:
    """A cgroup v1 value of a container of the main Docker (cgroupfs driver)."""
    return int(Path(f"/sys/fs/cgroup/{controller}/docker/{container_id}/{name}").read_text())


def container_of_pid(engine: Any, pid: int) -> str:
    owners = engine.list_containers([f"{LABEL_OWNER}={socket.gethostname()}:{pid}"])
    if len(owners) != 1:
        raise RuntimeError(f"kernel {pid} owns {len(owners)} containers")
    return owners[0].id


def many_kernels(gateway: Gateway, count: int, rounds: int) -> dict[str, float]:
    """``count`` kernels started at once through the gateway; each answers ``rounds`` cells
    sent to all kernels at once; then what they cost, idle and busy."""
    engine = connect("docker")
    gateway_rss_before = proc_status_mb(gateway.process.pid)
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        started = time.perf_counter()
        ids = list(pool.map(lambda _: gateway.start_kernel(DISTRIBUTED_SPEC, LAUNCH_ENV, 900),
                            range(count)))
        kernels = list(pool.map(gateway.connect, ids))
        list(pool.map(lambda k: _ok(k, "1"), kernels))
        all_up = time.perf_counter() - started

        def answer(kernel: GatewayKernel) -> list[float]:
            return [_ok(kernel, "sum(range(1000))") for _ in range(rounds)]

        latencies = sorted(t for times in pool.map(answer, kernels) for t in times)
        pids = [kernel_pid(k.id) for k in kernels]
        containers = [container_of_pid(engine, pid) for pid in pids]
        rss = [proc_status_mb(pid) for pid in pids]
        container_mb = [cgroup_value(c, "memory", "memory.usage_in_bytes") / 2**20
                        for c in containers]
        gateway_rss = proc_status_mb(gateway.process.pid)

        # idle: CPU the kernels, their containers and the gateway use doing nothing
        cpu0 = _cpu(pids, containers, gateway)
        time.sleep(IDLE_WINDOW_S)
        cpu1 = _cpu(pids, containers, gateway)
        idle = {k: (cpu1[k] - cpu0[k]) / IDLE_WINDOW_S for k in cpu0}

        # busy: one kernel runs `pass` cells back to back; CPU seconds per cell
        busy_cells = 200
        one = kernels[0]
        b0 = _cpu(pids[:1], containers[:1], gateway)
        t0 = time.perf_counter()
        for _ in range(busy_cells):
            _ok(one, "pass")
        busy_wall = time.perf_counter() - t0
        b1 = _cpu(pids[:1], containers[:1], gateway)
        busy = {k: (b1[k] - b0[k]) / busy_cells for k in b0}
        shim_mb = shim_rss_mb(containers) / count
        # a working sandbox: pandas, numpy and matplotlib loaded, a 200000 x 10 frame in memory
        _ok(one, WORKING_SET_CODE)
        working = (proc_status_mb(pids[0]),
                   cgroup_value(containers[0], "memory", "memory.usage_in_bytes") / 2**20)
        hosts = {}
        for kid in ids:
            host = _placement(gateway, kid)
            hosts[host] = hosts.get(host, 0) + 1
        for kernel in kernels:
            kernel.close()
        list(pool.map(lambda k: gateway.request("DELETE", f"/api/kernels/{k}", timeout=300),
                      ids))
    return {
        "kernels": count,
        "placed": hosts,
        "cells_answered": len(latencies),
        "all_started_s": all_up,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        "kernel_rss_mb_per_kernel": statistics.mean(rss),
        "container_mb_per_kernel": statistics.mean(container_mb),
        "gateway_mb_per_kernel": (gateway_rss - gateway_rss_before) / count,
        "idle_cpu_per_kernel": (idle["kernels"] + idle["containers"]) / count,
        "idle_cpu_gateway": idle["gateway"],
        "busy_cpu_s_per_cell": busy["kernels"] + busy["containers"] + busy["gateway"],
        "busy_cell_ms": busy_wall / busy_cells * 1e3,
        "shim_mb_per_kernel": shim_mb,
        "working_kernel_rss_mb": working[0],
        "working_container_mb": working[1],
    }


def shim_rss_mb(containers: list[str]) -> float:
    """RSS of the engine's per-container processes (containerd-shim) of ``containers``."""
    total = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and any(c.encode() in cmdline for c in containers):
            total += proc_status_mb(int(proc.name))
    return total


def _cpu(pids: list[int], containers: list[str], gateway: Gateway) -> dict[str, float]:
    return {
        "kernels": sum(proc_cpu_s(pid) for pid in pids),
        "containers": sum(cgroup_value(c, "cpuacct", "cpuacct.usage") for c in containers) / 1e9,
        "gateway": proc_cpu_s(gateway.process.pid),
    }


def _placement(gateway: Gateway, kernel_id: str) -> str:
    marker = "Kernel launched on '"
    for line in gateway.log().splitlines():
        if marker in line and kernel_id in line:
            return line.split(marker, 1)[1].split("'", 1)[0]
    return "?"


def measure_gateway(n: int, count: int) -> dict[str, Any]:
    """Everything above, with one gateway on 127.0.0.1; start rows are medians of starts, as
    the direct rows are (timing.py)."""
    results: dict[str, Any] = {}
    with running_gateway(Path(tempfile.mkdtemp(prefix="agentkernel-bench-gw-")),
                         extra_args=NODELAY_ARGS) as gateway:
        local_start, kernel = median_start(
            lambda: start_to_first_result(gateway, LOCAL_SPEC), GatewayKernel.shutdown)
        results["start_local_proxy_s"] = local_start
        results["pass_rt_s"] = round_trips(kernel, n)
        kernel.quick_ack = True
        results["pass_rt_quick_ack_s"] = round_trips(kernel, n)
        kernel.shutdown()
        distributed_start, kernel = median_start(
            lambda: start_to_first_result(gateway, DISTRIBUTED_SPEC), GatewayKernel.shutdown)
        results["start_distributed_s"] = distributed_start
        results["pass_rt_distributed_s"] = round_trips(kernel, n)
        kernel.shutdown()
        if count:
            results["many"] = many_kernels(gateway, count, rounds=10)
    return results


def _timed_pass(run: Callable[[str], Any]) -> float:
    start = time.perf_counter()
    run("pass")
    return time.perf_counter() - start


def round_trip_rows(n: int) -> list[dict[str, Any]]:
    """The round-trip rows alone, in one run: a direct kernel, one through a gateway with
    gateway_nodelay.py and one through a gateway without it, all up at once; their `pass`
    cells alternate (so a busy moment of this shared machine falls on all three alike), with
    a client that delays its ACKs, then with one that ACKs at once."""
    from bench import Kernel, install_kernelspec, row

    install_kernelspec(Path(tempfile.mkdtemp(prefix="agentkernel-bench-")))
    with contextlib.ExitStack() as stack:
        direct = Kernel("agentkernel")
        stack.callback(direct.stop)
        kernels = {}
        for name, args in (("nodelay", NODELAY_ARGS), ("plain", ())):
            gateway = stack.enter_context(running_gateway(
                Path(tempfile.mkdtemp(prefix="agentkernel-bench-gw-")), extra_args=args))
            kernel = gateway.connect(gateway.start_kernel(LOCAL_SPEC, LAUNCH_ENV, timeout=600))
            stack.callback(kernel.shutdown)
            kernels[name] = kernel
        runs = {"direct": direct.run, **{name: (lambda code, k=k: _ok(k, code))
                                         for name, k in kernels.items()}}
        times: dict[str, list[float]] = {}
        for quick_ack in (False, True):
            for kernel in kernels.values():
                kernel.quick_ack = quick_ack
            for _ in range(10):  # warm-up
                for run in runs.values():
                    run("pass")
            for _ in range(n):
                for name, run in runs.items():
                    times.setdefault(f"{name}{'_quick' * quick_ack}", []).append(_timed_pass(run))
    ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    return [
        row("pass cell round trip, via gateway", ms["nodelay"], "ms", "direct", ms["direct"],
            "<= 1.5x", ms["nodelay"] / ms["direct"], ms["nodelay"] / ms["direct"] <= 1.5,
            note=f"the gateway with gateway_nodelay.py; a client that ACKs at once: "
            f"{ms['nodelay_quick']:.2f} ms (direct {ms['direct_quick']:.2f} ms)"),
        row("same, gateway without TCP_NODELAY", ms["plain"], "ms", "direct", ms["direct"],
            "(reference)", ms["plain"] / ms["direct"], True,
            note=f"a client that ACKs at once: {ms['plain_quick']:.2f} ms"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the gateway's round-trip rows alone")
    parser.add_argument("-n", type=int, default=200, help="round trips per kernel")
    args = parser.parse_args(argv)
    os.environ["AGENTKERNEL_ENGINE"] = "docker"
    os.environ.setdefault("AGENTKERNEL_IMAGE", "agentkernel-test:latest")
    from bench import table

    results = {"engine": "docker", "image": os.environ["AGENTKERNEL_IMAGE"], "samples": args.n,
               "rows": round_trip_rows(args.n)}
    print(table(results))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {RESULTS / 'gateway.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
