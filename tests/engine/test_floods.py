"""Output floods on the real kernel, in a sandbox of the default profile (512 MB).

A loop printing as fast as it can got the sandbox killed for lack of memory: IPython 9 keeps
every write of a cell in its output history, and the sandbox prints faster than a local
kernel. The flood is counted in prints rather than seconds (the growth is per write), and the
runner's memory is read inside the sandbox before and after. The output must arrive whole, as
the local kernel sends it, and the sandbox must live on. The image is one whose sandbox runs
IPython 9 (Debian trixie's, made by scripts/setup.sh), as the default image's does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.kernels import execute, running_kernel
from jupyter_client.blocking.client import BlockingKernelClient

from agentkernel.engine import Engine

pytestmark = pytest.mark.engine

MB = 1024 * 1024
IMAGE = "agentkernel-scipy:trixie"  # its sandbox gets the host's IPython 9
RSS = "int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024"
# the sandbox's memory limit and its peak use, on cgroup v1 or v2
CGROUP = ("import os\n"
          "def cgroup(*names):\n"
          "    for name in names:\n"
          "        if os.path.exists(name):\n"
          "            return int(open(name).read().strip())\n")
LIMIT = "cgroup('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory.max')"
PEAK = ("cgroup('/sys/fs/cgroup/memory/memory.max_usage_in_bytes', "
        "'/sys/fs/cgroup/memory.peak')")
PRINTS = 1_000_000
# What the runner may keep after a flood (measured: 1 MB; IPython 9's output history kept 65 MB
# of a million prints before the bound).
GROWTH_BOUND = 24 * MB
# The sandbox's peak during a 50 MB print (measured: 137 MB on Docker, 138 MB on Podman: the
# string, its UTF-8 bytes and the runner).
PEAK_BOUND = 256 * MB


def value(kc: BlockingKernelClient, expression: str) -> int:
    run = execute(kc, expression)
    assert run.status == "ok", run.error
    return int(run.result["text/plain"])


@pytest.fixture(scope="module")
def kc(engine: Engine, kernelspec: None) -> Iterator[BlockingKernelClient]:
    if not engine.image_present(IMAGE):
        pytest.fail(f"image {IMAGE} missing in {engine.kind}: run scripts/setup.sh",
                    pytrace=False)
    with running_kernel(env={"AGENTKERNEL_IMAGE": IMAGE}) as (_, client):
        execute(client, CGROUP)  # the sandbox's start notes, if any, go with a first cell
        assert value(client, LIMIT) == 512 * MB  # the default profile's sandbox
        assert value(client, "int(__import__('IPython').__version__.split('.')[0])") >= 9
        yield client


def test_a_print_flood_keeps_the_sandbox_bounded(kc: BlockingKernelClient) -> None:
    before = value(kc, RSS)
    run = execute(kc, f"for i in range({PRINTS}):\n    print(i)", timeout=600)
    assert run.status == "ok", run.error
    assert run.stream() == "".join(f"{i}\n" for i in range(PRINTS))
    grown = value(kc, RSS) - before
    assert grown < GROWTH_BOUND, f"the runner grew by {grown / MB:.0f} MB"


def test_a_50_mb_print_arrives_and_the_sandbox_lives(kc: BlockingKernelClient) -> None:
    before = value(kc, RSS)
    run = execute(kc, "print('y' * 50_000_000)", timeout=600)
    assert run.status == "ok", run.error
    text = run.stream()
    assert (len(text), text.count("y"), text[-1]) == (50_000_001, 50_000_000, "\n")
    assert value(kc, "1 + 1") == 2
    grown = value(kc, RSS) - before
    assert grown < GROWTH_BOUND, f"the runner kept {grown / MB:.0f} MB"
    peak = value(kc, PEAK)
    assert peak < PEAK_BOUND, f"the sandbox peaked at {peak / MB:.0f} MB"
