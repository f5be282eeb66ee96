"""``get_ipython().kernel`` in the sandbox: what libraries use of ipykernel's kernel object.

Notebooks and libraries publish output through the kernel object itself:
``kernel.session.send(kernel.iopub_socket, "display_data", content, parent=kernel.get_parent())``,
``kernel.comm_manager``, ``kernel.shell``. Here ``session.send`` turns an allowed iopub message
into the frame the runner sends for the same output (``display``, ``stream``, ``clear_output``,
``error``, comm frames), so the host forwards it through the same checks and output policy as
any other output; any other message (a ``status``, a reply, an ``input_request``) or a socket
other than ``iopub_socket`` is dropped with one line on the cell's stderr. No message reaches
the frontend as the cell wrote it.
"""

from __future__ import annotations

import base64
import os
import sys
import uuid
import warnings
from datetime import datetime, timezone

PROTOCOL_VERSION = "5.4"
# iopub messages a sandbox may send, each as the frame type that carries it to the host
IOPUB_FRAMES = {
    "display_data": "display",
    "update_display_data": "display",
    "stream": "stream",
    "clear_output": "clear_output",
    "error": "error",
    "comm_open": "comm_open",
    "comm_msg": "comm_msg",
    "comm_close": "comm_close",
}


class Refused(ValueError):
    """A message the sandbox does not send (the message is one line)."""


class IOPubSocket:
    """``kernel.iopub_socket``: names the one channel a sandbox's messages may go to."""

    def __repr__(self) -> str:
        return "<agentkernel iopub socket>"


def _dict(content: dict, key: str) -> dict:
    value = content.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refused(f"its {key!r} is a {type(value).__name__}, not a dict")
    return value


def _str(content: dict, key: str) -> str:
    value = content.get(key)
    if not isinstance(value, str):
        raise Refused(f"its {key!r} is {type(value).__name__}, not a str")
    return value


def _encoded(buffers) -> list[str]:
    return [base64.b64encode(memoryview(b).tobytes()).decode("ascii") for b in buffers or []]


def frame_of(msg_type: str, content: dict, metadata: dict, buffers) -> dict:
    """The frame that carries an iopub message of ``msg_type``; Refused when not allowed or
    malformed."""
    kind = IOPUB_FRAMES.get(msg_type)
    if kind is None:
        raise Refused(f"not an output message (accepted on kernel.iopub_socket: "
                      f"{', '.join(IOPUB_FRAMES)})")
    if not isinstance(content, dict):
        raise Refused(f"its content is a {type(content).__name__}, not a dict")
    if kind == "display":
        transient = _dict(content, "transient")
        display_id = transient.get("display_id")
        return {"type": "display", "data": _dict(content, "data"),
                "metadata": _dict(content, "metadata"),
                "transient": {"display_id": str(display_id)} if display_id is not None else {},
                "update": msg_type == "update_display_data"}
    if kind == "stream":
        name = content.get("name")
        if name not in ("stdout", "stderr"):
            raise Refused(f"stream {str(name)[:40]!r}: accepted stdout, stderr")
        return {"type": "stream", "name": name, "text": _str(content, "text")}
    if kind == "clear_output":
        return {"type": "clear_output", "wait": bool(content.get("wait", False))}
    if kind == "error":
        lines = content.get("traceback") or []
        if not isinstance(lines, list):
            raise Refused("its 'traceback' is not a list")
        return {"type": "error", "ename": _str(content, "ename"),
                "evalue": _str(content, "evalue"), "traceback": [str(line) for line in lines]}
    if not isinstance(metadata, dict):
        raise Refused(f"its metadata is a {type(metadata).__name__}, not a dict")
    frame = {"type": kind, "comm_id": _str(content, "comm_id"), "data": _dict(content, "data"),
             "metadata": metadata}
    if kind == "comm_open":
        frame["target_name"] = _str(content, "target_name")
        if "target_module" in content:
            module = content["target_module"]
            frame["target_module"] = module if isinstance(module, str) else None
    if buffers:
        frame["buffers"] = _encoded(buffers)
    return frame


class SandboxSession:
    """``kernel.session``: jupyter_client's Session as libraries call it (``msg``,
    ``msg_header``, ``send``), sending through the runner instead of a ZeroMQ socket."""

    def __init__(self, kernel: SandboxKernel) -> None:
        self._kernel = kernel
        self.session = str(uuid.uuid4())
        self.username = os.environ.get("USER", "username")
        self.pid = os.getpid()
        self.message_count = 0
        self.metadata: dict = {}

    @property
    def msg_id(self) -> str:
        """A new message id, as jupyter_client makes them."""
        number, self.message_count = self.message_count, self.message_count + 1
        return f"{self.session}_{os.getpid()}_{number}"

    def msg_header(self, msg_type: str) -> dict:
        """A new message header for ``msg_type``."""
        return {"msg_id": self.msg_id, "msg_type": msg_type, "username": self.username,
                "session": self.session, "date": datetime.now(timezone.utc),
                "version": PROTOCOL_VERSION}

    def msg(self, msg_type: str, content: dict | None = None, parent: dict | None = None,
            header: dict | None = None, metadata: dict | None = None) -> dict:
        """The nested message dict, as ``Session.msg`` returns it."""
        header = self.msg_header(msg_type) if header is None else header
        parent = parent or {}
        return {"header": header, "msg_id": header.get("msg_id"),
                "msg_type": header.get("msg_type"),
                "parent_header": dict(parent.get("header", parent)),
                "content": {} if content is None else content,
                "metadata": {**self.metadata, **(metadata or {})}}

    def send(self, stream, msg_or_type, content: dict | None = None, parent: dict | None = None,
             ident=None, buffers=None, track: bool = False, header: dict | None = None,
             metadata: dict | None = None) -> dict | None:
        """Send an iopub message to the frontend (as the running cell's output); return the
        message, or None when it was dropped (told in one line on the cell's stderr)."""
        if isinstance(msg_or_type, dict):
            msg = msg_or_type
            buffers = buffers or msg.get("buffers") or []
        else:
            msg = self.msg(msg_or_type, content, parent, header, metadata)
        msg_type = (msg.get("header") or {}).get("msg_type", msg.get("msg_type"))
        try:
            if stream is not self._kernel.iopub_socket:
                raise Refused("a sandbox sends output messages on kernel.iopub_socket only")
            frame = frame_of(msg_type, msg.get("content"), msg.get("metadata", {}), buffers)
        except Refused as exc:
            _tell(f"kernel.session.send dropped a {str(msg_type)[:40]!r} message: {exc}")
            return None
        self._kernel.transport.output(frame)
        msg["tracker"] = None
        return msg


def _tell(message: str) -> None:
    """One line on the cell's stderr."""
    try:
        sys.stderr.write(f"[agentkernel] {message}\n")
    except Exception:
        pass


class SandboxKernel:
    """What ``get_ipython().kernel`` offers in a local kernel and libraries rely on: the parent
    request (ipywidgets' Output widget routes output by its msg_id), the session and iopub
    socket to publish on, the comm manager, the shell, input from the frontend."""

    def __init__(self, transport, shell=None) -> None:
        self.transport = transport
        self.shell = shell
        self.iopub_socket = IOPubSocket()
        self.session = SandboxSession(self)

    @property
    def comm_manager(self):
        """The comm manager (``comm.get_comm_manager()``) of this runner."""
        from . import comms

        return comms.get_comm_manager()

    def get_parent(self, channel=None) -> dict:
        """The Jupyter request being run: ``{"header": {...}}`` (``{}`` between requests)."""
        return self.transport.parent()

    @property
    def _parent_header(self) -> dict:
        warnings.warn("Kernel._parent_header is deprecated in ipykernel 6. Use .get_parent()",
                      DeprecationWarning, stacklevel=2)
        return self.get_parent()

    def raw_input(self, prompt: str = "") -> str:
        """``input()``: the prompt goes to the frontend, its reply comes back."""
        return self.transport.ask(str(prompt), False)

    def getpass(self, prompt: str = "Password: ", stream=None, **kwargs) -> str:
        """``getpass.getpass()``: a hidden reply from the frontend."""
        return self.transport.ask(str(prompt), True)
