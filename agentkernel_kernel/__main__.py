"""``python -m agentkernel_kernel install ...`` installs the kernelspec; anything else launches
the kernel (Jupyter runs ``python -m agentkernel_kernel -f {connection_file}``)."""

import os
import sys


def main() -> None:
    """Dispatch on the first argument; imports are lazy so ``install`` needs no kernel."""
    if sys.argv[1:2] == ["install"]:
        from agentkernel_kernel.kernelspec import main as install_main

        install_main(sys.argv[2:])
        return
    # Listen on the kernel's ports first: the client can connect while the rest loads.
    from agentkernel_kernel.early_listen import listen_early

    listeners = listen_early(sys.argv[1:])
    # Start the sandbox next, in a forked child on the other core, so the container comes up
    # while ipykernel is still importing; or take over the warm one the launching process
    # handed us.
    from agentkernel.handoff import HANDOFF_ENV, take_handoff
    from agentkernel_kernel.start_child import StartChild

    eager = os.environ.get("AGENTKERNEL_EAGER_START", "1") != "0"
    child = StartChild.fork(close=listeners.values()) if (
        eager and HANDOFF_ENV not in os.environ) else None
    from agentkernel_kernel.sandbox_manager import for_this_kernel

    manager = for_this_kernel()
    handoff = take_handoff()
    adopted = handoff is not None and manager.adopt(handoff)
    if not adopted and eager:
        manager.start_in_background(child.messages() if child is not None else None)

    from agentkernel_kernel.app import AgentKernelApp

    AgentKernelApp.launch_instance(manager=manager, early_listeners=listeners)


if __name__ == "__main__":
    main()
