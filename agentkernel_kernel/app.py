"""The kernel application: ipykernel's, with AgentKernel as its kernel and our manager in it."""

from __future__ import annotations

import json
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from jupyter_client.jsonutil import json_clean, json_default
from jupyter_client.session import json_packer
from traitlets import Instance, Type

from agentkernel.manager import SandboxManager
from agentkernel_kernel.kernel import AgentKernel


class AgentKernelApp(IPKernelApp):
    """IPKernelApp running AgentKernel with a SandboxManager made before ipykernel loaded."""

    name = "agentkernel"
    kernel_class = Type(AgentKernel, klass="ipykernel.kernelbase.Kernel").tag(config=True)
    manager = Instance(SandboxManager, allow_none=True,
                       help="The sandbox (maybe already starting) the kernel takes over.")

    def init_session(self) -> None:
        """ipykernel's session, packing every message so that it can always be sent."""
        super().init_session()
        self.session.pack = pack_message


def pack_message(obj: Any) -> bytes:
    """Jupyter's JSON packer, which cannot send text holding a lone surrogate (a cell can print
    ``'\\ud800'``): such text goes out escaped (``\\ud800`` in the JSON), so the message, and
    the reply a client waits for, is still sent."""
    try:
        return json_packer(obj)
    except UnicodeEncodeError:
        return json.dumps(json_clean(obj), default=json_default, ensure_ascii=True,
                          allow_nan=False).encode("ascii")
