"""What a kernel process loads before its first cell: not docker-py (a warm sandbox needs no
engine client for its first reply) and not the %sandbox parser (``commands.py``, loaded for the
first cell that may call one of our magics)."""

from __future__ import annotations

import subprocess
import sys

KERNEL_START = (
    "import sys\n"
    "from agentkernel_kernel.start_child import begin_first_sandbox\n"
    "from agentkernel_kernel.sandbox_manager import for_this_kernel\n"
    "import agentkernel_kernel.app\n"
    "print(sorted(m for m in ('agentkernel.commands', 'agentkernel.command_handlers', "
    "'docker', 'requests') if m in sys.modules))\n"
)


def test_the_kernel_process_starts_without_the_parser_or_docker_py() -> None:
    result = subprocess.run([sys.executable, "-c", KERNEL_START], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
