"""The kernel application: ipykernel's, with AgentKernel as its kernel and our manager in it."""

from __future__ import annotations

from ipykernel.kernelapp import IPKernelApp
from traitlets import Instance, Type

from agentkernel.manager import SandboxManager
from agentkernel_kernel.kernel import AgentKernel


class AgentKernelApp(IPKernelApp):
    """IPKernelApp running AgentKernel with a SandboxManager made before ipykernel loaded."""

    name = "agentkernel"
    kernel_class = Type(AgentKernel, klass="ipykernel.kernelbase.Kernel").tag(config=True)
    manager = Instance(SandboxManager, allow_none=True,
                       help="The sandbox (maybe already starting) the kernel takes over.")
