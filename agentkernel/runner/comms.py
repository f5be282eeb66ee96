"""Comms in the sandbox, wired to the ``comm`` package as ipykernel wires it.

``comm.create_comm`` makes comms whose messages leave as ``comm_open`` / ``comm_msg`` /
``comm_close`` frames (binary buffers as base64), and ``comm.get_comm_manager`` returns the one
manager, which handles the frontend's comm messages the runner receives as requests. So
ipywidgets, tqdm.notebook and anything else built on ``comm`` work as on a local kernel.
"""

from __future__ import annotations

import base64
import logging

import comm
from comm import base_comm

COMM_LOGGER = "Comm"  # the comm package's logger: its errors belong in the kernel's log


class BaseComm(base_comm.BaseComm):
    """A comm whose messages are frames to the host (which sends them on iopub); named as
    ipykernel's class that ``comm.create_comm`` returns."""

    transport = None  # set by install()

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        frame = {"type": msg_type, "comm_id": self.comm_id, "data": data or {},
                 "metadata": metadata or {}}
        frame.update(keys)
        if buffers:
            frame["buffers"] = [base64.b64encode(memoryview(b).tobytes()).decode("ascii")
                                for b in buffers]
        BaseComm.transport.output(frame)


_manager = base_comm.CommManager()


def create_comm(*args, **kwargs) -> BaseComm:
    """``comm.create_comm``: a comm that talks to the frontend through the host."""
    return BaseComm(*args, **kwargs)


def get_comm_manager() -> base_comm.CommManager:
    """``comm.get_comm_manager``: the one manager of this runner."""
    return _manager


def install(transport, log_handler: logging.Handler) -> None:
    """Make the ``comm`` package use our comms; its log goes to ``log_handler``."""
    BaseComm.transport = transport
    comm.create_comm = create_comm
    comm.get_comm_manager = get_comm_manager
    logger = logging.getLogger(COMM_LOGGER)
    logger.addHandler(log_handler)
    logger.propagate = False


def _message(request: dict, content: dict) -> dict:
    """A Jupyter message, as the comm manager's handlers expect one, from a runner request."""
    buffers = [memoryview(base64.b64decode(b)) for b in request.get("buffers") or []]
    return {"header": dict(request.get("parent") or {}).get("header", {}),
            "parent_header": {}, "metadata": request.get("metadata") or {},
            "content": content, "buffers": buffers}


def handle(request: dict) -> dict:
    """Carry out a ``comm_open``/``comm_msg``/``comm_close``/``comm_info`` request; return the
    fields of its ``done``."""
    kind = request["type"]
    if kind == "comm_info":
        target = request.get("target_name")
        comms = {cid: {"target_name": c.target_name} for cid, c in _manager.comms.items()
                 if target is None or c.target_name == target}
        return {"comms": comms}
    content = {"comm_id": str(request["comm_id"]), "data": request.get("data") or {}}
    if kind == "comm_open":
        content["target_name"] = str(request.get("target_name") or "")
        if request.get("target_module") is not None:
            content["target_module"] = request["target_module"]
        _manager.comm_open(None, None, _message(request, content))
    elif kind == "comm_msg":
        _manager.comm_msg(None, None, _message(request, content))
    else:
        _manager.comm_close(None, None, _message(request, content))
    return {}
