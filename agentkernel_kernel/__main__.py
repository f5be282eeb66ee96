"""``python -m agentkernel_kernel install ...`` installs the kernelspec; anything else launches
the kernel (Jupyter runs ``python -m agentkernel_kernel -f {connection_file}``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentkernel.manager import SandboxManager


def main() -> None:
    """Dispatch on the first argument; imports are lazy so ``install`` needs no kernel."""
    if sys.argv[1:2] == ["install"]:
        from agentkernel_kernel.kernelspec import main as install_main

        install_main(sys.argv[2:])
        return
    # Listen on the kernel's ports first: the client can connect while the rest loads.
    from agentkernel_kernel.early_listen import listen_early

    listeners = listen_early(sys.argv[1:])
    # The sandbox comes next: the one the warm pool handed over, else one a forked child
    # starts on the other core while ipykernel is still importing.
    from agentkernel_kernel.start_child import begin_first_sandbox

    manager = begin_first_sandbox(_kernel_manager, close=listeners.values())

    from agentkernel_kernel.app import AgentKernelApp

    AgentKernelApp.launch_instance(manager=manager, early_listeners=listeners)


def _kernel_manager() -> SandboxManager:
    """This kernel's manager (imported on first call: the start child forks before)."""
    from agentkernel_kernel.sandbox_manager import for_this_kernel

    return for_this_kernel()


if __name__ == "__main__":
    main()
