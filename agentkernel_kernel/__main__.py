"""``python -m agentkernel_kernel install ...`` installs the kernelspec; anything else launches
the kernel (Jupyter runs ``python -m agentkernel_kernel -f {connection_file}``)."""

import sys


def main() -> None:
    """Dispatch on the first argument; imports are lazy so ``install`` needs no kernel."""
    if sys.argv[1:2] == ["install"]:
        from agentkernel_kernel.kernelspec import main as install_main

        install_main(sys.argv[2:])
        return
    from ipykernel.kernelapp import IPKernelApp

    from agentkernel_kernel.kernel import AgentKernel

    IPKernelApp.launch_instance(kernel_class=AgentKernel)


if __name__ == "__main__":
    main()
