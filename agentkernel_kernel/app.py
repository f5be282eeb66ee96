"""The kernel application: ipykernel's, with AgentKernel as its kernel and our manager in it."""

from __future__ import annotations

import json
from typing import Any

import zmq
from jupyter_client.jsonutil import json_clean, json_default
from jupyter_client.session import json_packer
from traitlets import Dict, Instance, Type

from agentkernel.manager import SandboxManager
from agentkernel_kernel.ipykernel_compat import HookedApp, HookedHeartbeat
from agentkernel_kernel.kernel import AgentKernel

CURVE_KEYS = ("curve_publickey", "curve_secretkey")  # ipykernel 7's, passed to its heartbeat


class AgentKernelApp(HookedApp):
    """IPKernelApp running AgentKernel with a SandboxManager made before ipykernel loaded."""

    name = "agentkernel"
    kernel_class = Type(AgentKernel, klass="ipykernel.kernelbase.Kernel").tag(config=True)
    manager = Instance(SandboxManager, allow_none=True,
                       help="The sandbox (maybe already starting) the kernel takes over.")

    early_listeners = Dict(help="Sockets listening on the channel ports since the process "
                           "started (early_listen.py), by port, for the channels to take over.")

    def initialize(self, argv: Any = None) -> None:
        try:
            super().initialize(argv)
        finally:  # a port ipykernel did not bind through before_bind is not held
            for listener in self.early_listeners.values():
                listener.close()
            self.early_listeners.clear()

    def before_bind(self, socket: zmq.Socket, port: int) -> None:
        """Before ipykernel's bind: take over the listening socket made early for ``port``,
        with the connections the client made meanwhile."""
        listener = self.early_listeners.pop(port, None)
        if listener is not None:
            socket.setsockopt(zmq.USE_FD, listener.detach())

    def init_heartbeat(self) -> None:
        """ipykernel's heartbeat (its own context and thread), binding through the listening
        socket made early for its port."""
        listener = self.early_listeners.pop(self.hb_port, None)
        curve = {key: getattr(self, key) for key in CURVE_KEYS if hasattr(self, key)}
        self.heartbeat = EarlyHeartbeat(
            zmq.Context(), (self.transport, self.ip, self.hb_port), **curve,
            listener_fd=listener.detach() if listener is not None else None,
        )
        self.hb_port = self.heartbeat.port
        self.heartbeat.start()

    def init_session(self) -> None:
        """ipykernel's session, packing every message so that it can always be sent."""
        super().init_session()
        self.session.pack = pack_message


class EarlyHeartbeat(HookedHeartbeat):
    """ipykernel's heartbeat, whose socket takes over the port's early listening socket."""

    def __init__(self, *args: Any, listener_fd: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listener_fd = listener_fd

    def before_bind(self) -> None:
        fd, self.listener_fd = self.listener_fd, None
        if fd is not None:
            self.socket.setsockopt(zmq.USE_FD, fd)


def pack_message(obj: Any) -> bytes:
    """Jupyter's JSON packer, which cannot send text holding a lone surrogate (a cell can print
    ``'\\ud800'``): such text goes out escaped (``\\ud800`` in the JSON), so the message, and
    the reply a client waits for, is still sent."""
    try:
        return json_packer(obj)
    except UnicodeEncodeError:
        return json.dumps(json_clean(obj), default=json_default, ensure_ascii=True,
                          allow_nan=False).encode("ascii")
