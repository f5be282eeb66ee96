"""What the copy-on-write workspace costs a kernel's start, on a 1 GB project of 10,000 files.

Kernel start to first result, for a notebook in ``project/nb`` of a git repository holding
10,000 files of 100 KB (1 GB), alternated in one run:
  - workspace: the default policy (the project given copy-on-write, credentials hidden);
  - no workspace: the same kernel with the policy's ``workspace = "off"`` (the baseline);
  - an empty project: the workspace of a project holding only the notebook's folder.
And the same without the kernel: a Sandbox started and answering one exec, with the project as
its workspace (fresh volumes each time) and without, alternated. Also the credentials scan of
the 1 GB project alone (``hostpaths.secret_entries``), and a cell
that reads every file of the project once through the overlay vs the host's own read.
Prints the table and writes bench/results/workspace.json.

    AGENTKERNEL_IMAGE=agentkernel-test:latest .venv/bin/python bench/workspace.py --engine docker
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.kernels import install_kernelspec  # noqa: E402

from agentkernel.config.hostpaths import secret_entries  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FILES, FILE_KB = 10_000, 100
READ_ALL = ("import os\nn = 0\nfor d, _, fs in os.walk('..'):\n    for f in fs:\n"
            "        n += len(open(os.path.join(d, f), 'rb').read())\nn")


def make_project(parent: Path, files: int) -> Path:
    """A git repository with ``nb/`` and ``files`` files of FILE_KB in 100 folders."""
    project = parent / f"project-{files}"
    (project / "nb").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    block = os.urandom(FILE_KB * 1024)
    for index in range(files):
        folder = project / "data" / f"d{index % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}.bin").write_bytes(block)
    return project


@contextmanager
def kernel_in(cwd: Path, env: dict[str, str]) -> Iterator[BlockingKernelClient]:
    """A started agentkernel kernel of a notebook in ``cwd``, ready; shut down afterwards."""
    km = KernelManager(kernel_name="agentkernel")
    km.start_kernel(cwd=str(cwd), env={**os.environ, **env})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def run_ok(kc: BlockingKernelClient, code: str) -> None:
    reply = kc.execute_interactive(code, timeout=600)
    assert reply["content"]["status"] == "ok", reply["content"]


def start_to_first_result(cwd: Path, env: dict[str, str]) -> float:
    """Seconds from launching the kernel to the result of ``1``."""
    started = time.monotonic()
    with kernel_in(cwd, env) as kc:
        run_ok(kc, "1")
        return time.monotonic() - started


def cell_seconds(cwd: Path, env: dict[str, str], code: str) -> float:
    """Seconds the cell ``code`` takes in a kernel of ``cwd`` (its start not counted)."""
    with kernel_in(cwd, env) as kc:
        run_ok(kc, "1")
        started = time.monotonic()
        run_ok(kc, code)
        return time.monotonic() - started


def sandbox_start_seconds(project: Path, workspace_id: str | None) -> float:
    """Seconds to start a network-less Sandbox and run one exec in it; with ``workspace_id``
    the project is its workspace (volumes made for it, then removed)."""
    from agentkernel.config import SandboxConfig
    from agentkernel.sandbox import Sandbox, workspace

    config = SandboxConfig(image=os.environ.get("AGENTKERNEL_IMAGE", "agentkernel-test:latest"),
                           network=False, workspace=str(project) if workspace_id else None,
                           workspace_id=workspace_id)
    sandbox = Sandbox(config)
    started = time.monotonic()
    sandbox.start()
    sandbox.exec("true")
    took = time.monotonic() - started
    sandbox.stop()
    if workspace_id:
        workspace.discard(sandbox.engine, workspace_id)
    return took


def host_read_seconds(project: Path) -> float:
    started = time.monotonic()
    total = sum(len(p.read_bytes()) for p in project.rglob("*.bin"))
    assert total == FILES * FILE_KB * 1024
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default=os.environ.get("AGENTKERNEL_ENGINE", "docker"))
    parser.add_argument("-n", type=int, default=5, help="starts of each kind")
    args = parser.parse_args()
    os.environ["AGENTKERNEL_ENGINE"] = args.engine
    with tempfile.TemporaryDirectory(prefix="agentkernel-bench-ws-") as folder:
        base = Path(folder)
        install_kernelspec(base / "jupyter")
        policies = base / "policies"
        policies.mkdir()
        off = policies / "off.json"
        off.write_text(json.dumps({"SandboxPolicy": {"workspace": "off"}}))
        big, empty = make_project(base, FILES), make_project(base, 0)
        scan = []
        for _ in range(args.n):
            started = time.process_time()
            secret_entries(big)
            scan.append(time.process_time() - started)
        kinds = {"workspace": (big, {"AGENTKERNEL_POLICY": ""}),
                 "no workspace": (big, {"AGENTKERNEL_POLICY": str(off)}),
                 "empty project": (empty, {"AGENTKERNEL_POLICY": ""})}
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        start_to_first_result(big / "nb", kinds["workspace"][1])  # the image's caches warm
        for _ in range(args.n):
            for kind, (project, env) in kinds.items():
                times[kind].append(start_to_first_result(project / "nb", env))
        bare: dict[str, list[float]] = {"workspace": [], "no workspace": []}
        sandbox_start_seconds(big, None)
        for index in range(args.n * 2):
            bare["workspace"].append(sandbox_start_seconds(big, f"bench-{os.getpid()}-{index}"))
            bare["no workspace"].append(sandbox_start_seconds(big, None))
        read_sandbox = cell_seconds(big / "nb", kinds["workspace"][1], READ_ALL)
        read_host = host_read_seconds(big)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    result = {
        "engine": args.engine, "project": f"{FILES} files, {FILES * FILE_KB // 1024} MB",
        "start_s": medians, "start_samples": times,
        "workspace_vs_none": medians["workspace"] / medians["no workspace"],
        "workspace_vs_empty_project": medians["workspace"] / medians["empty project"],
        "sandbox_start_s": {kind: statistics.median(v) for kind, v in bare.items()},
        "sandbox_workspace_vs_none": statistics.median(bare["workspace"])
        / statistics.median(bare["no workspace"]),
        "scan_cpu_s": statistics.median(scan),
        "read_all_sandbox_s": read_sandbox, "read_all_host_s": read_host,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"workspace-{args.engine}.json").write_text(json.dumps(result, indent=1))
    print(f"{args.engine}: start to first result, median of {args.n} (1 GB / {FILES} files):")
    for kind, value in medians.items():
        print(f"  {kind:<14} {value:.3f} s")
    print(f"  workspace / no workspace: {result['workspace_vs_none']:.2f}x; "
          f"/ empty project: {result['workspace_vs_empty_project']:.2f}x")
    print(f"  Sandbox start + one exec: {result['sandbox_start_s']['workspace']:.3f} s with the "
          f"workspace, {result['sandbox_start_s']['no workspace']:.3f} s without "
          f"({result['sandbox_workspace_vs_none']:.2f}x)")
    print(f"  credentials scan: {result['scan_cpu_s'] * 1000:.0f} ms of CPU")
    print(f"  reading all 1 GB: {read_sandbox:.2f} s in the sandbox (overlay), "
          f"{read_host:.2f} s on the host")


if __name__ == "__main__":
    main()
