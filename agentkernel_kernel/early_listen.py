"""The kernel's message ports listened on from the start of the process.

The client connects as soon as the kernel process is launched. Until ipykernel binds its
sockets (after its imports, 0.2-0.4 s) the connection is refused, and ZeroMQ tries again only
every 100 ms (its reconnect interval), so the first request waited up to 100 ms more for a kernel
that was already up. Listening on the ports at once lets the client's first attempt succeed: the
operating system accepts and holds the connections, and ipykernel's sockets take the listening
sockets over when they bind (ZMQ_USE_FD, see ``AgentKernelApp``).

Until then, another process may also take a port the launcher chose free (a kernel's outgoing
connection, with many kernels launched at once): ipykernel's heartbeat thread then dies on
"Address already in use", and a client's heartbeat channel waits on it for ever. Held from the
process's first step, the ports leave that race only the launch itself.

Plain TCP on an IP address only; anything else (IPC, a host name, a port already taken) is left
to ipykernel, which binds as it always does. Standard library only: this runs before any import
that takes time.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from pathlib import Path

# The channels ipykernel binds through IPKernelApp._bind_socket, and the heartbeat's port, which
# its own thread binds (AgentKernelApp.init_heartbeat hands it the listening socket).
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port")
HEARTBEAT = "hb_port"
BACKLOG = 100  # ZeroMQ's own


def connection_file(argv: Sequence[str]) -> str | None:
    """The ``-f FILE`` (or ``-f=FILE``, ``--f=FILE``) argument Jupyter launches kernels with."""
    for index, arg in enumerate(argv):
        if arg in ("-f", "--f") and index + 1 < len(argv):
            return argv[index + 1]
        for prefix in ("-f=", "--f="):
            if arg.startswith(prefix):
                return arg[len(prefix):]
    return None


def listen_early(argv: Sequence[str]) -> dict[int, socket.socket]:
    """Listening sockets on the channel and heartbeat ports of the connection file named in
    ``argv``, by port; empty when there is none to read or it is not plain TCP on an IP
    address."""
    path = connection_file(argv)
    try:
        info = json.loads(Path(path).read_text()) if path else {}
        address = ipaddress.ip_address(info.get("ip", ""))
    except (OSError, ValueError, AttributeError):
        return {}
    if info.get("transport", "tcp") != "tcp":
        return {}
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    listeners: dict[int, socket.socket] = {}
    for key in (*CHANNELS, HEARTBEAT):
        port = info.get(key)
        if isinstance(port, int) and 0 < port < 65536 and port not in listeners:
            listener = _listen(family, str(address), port)
            if listener is not None:
                listeners[port] = listener
    return listeners


def _listen(family: socket.AddressFamily, ip: str, port: int) -> socket.socket | None:
    """A non-blocking listening socket on ``ip:port`` as ZeroMQ makes one, or None."""
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((ip, port))
        listener.listen(BACKLOG)
        listener.setblocking(False)
    except OSError:
        listener.close()
        return None
    return listener
