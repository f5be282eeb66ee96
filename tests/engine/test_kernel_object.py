"""``get_ipython().kernel`` as notebooks and libraries use it, on the real kernel.

Libraries publish output through the kernel object (ipykernel's own ``Comm._publish_msg``, job
runners, display helpers): ``kernel.session.send(kernel.iopub_socket, msg_type, content,
parent=kernel.get_parent(), ident=..., buffers=...)``, ``kernel.session.msg`` then ``send``,
``kernel.comm_manager``, ``kernel.shell``. Each cell here runs on the local ``python3`` kernel
(ipykernel) and in the sandbox, and the frontend must see the same messages; what is not
output (a status, a reply) never reaches the frontend from a sandbox.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.kernels import running_kernel
from helpers.outputs import safe_to_show
from jupyter_client.blocking.client import BlockingKernelClient

pytestmark = pytest.mark.engine

PUBLISH = """\
k = get_ipython().kernel
"""
# the ways libraries and notebooks publish through the kernel object
CELLS = [
    PUBLISH + "k.session.send(k.iopub_socket, 'display_data', {'data': {'text/plain': 'hi'}, "
    "'metadata': {}, 'transient': {'display_id': 'd1'}}, parent=k.get_parent('shell'));",
    PUBLISH + "k.session.send(k.iopub_socket, 'update_display_data', {'data': {'text/plain': "
    "'ho', 'text/html': '<b>ho</b>'}, 'metadata': {}, 'transient': {'display_id': 'd1'}}, "
    "parent=k.get_parent());",
    PUBLISH + "msg = k.session.msg('stream', {'name': 'stdout', 'text': 'streamed\\n'}, "
    "parent=k.get_parent())\nk.session.send(k.iopub_socket, msg, ident=b'stream.stdout')\n"
    "print(msg['msg_type'], msg['parent_header']['msg_type']);",
    PUBLISH + "import sys\nprint('before')\nsys.stdout.flush()\n"  # as IPython's clear_output
    "k.session.send(k.iopub_socket, 'clear_output', {'wait': False}, parent=k.get_parent())\n"
    "print('after')",
    PUBLISH + "k.session.send(k.iopub_socket, 'comm_open', {'comm_id': 'c-1', 'target_name': "
    "'demo.target', 'data': {'value': 1}}, metadata={'version': '2'}, parent=k.get_parent(), "
    "ident=b'comm-c-1', buffers=[b'\\x00\\x01'])\n"
    "k.session.send(k.iopub_socket, 'comm_msg', {'comm_id': 'c-1', 'data': {'value': 2}}, "
    "parent=k.get_parent())\n"
    "k.session.send(k.iopub_socket, 'comm_close', {'comm_id': 'c-1', 'data': {}}, "
    "parent=k.get_parent());",
    PUBLISH + "print(type(k.comm_manager).__name__, k.shell is get_ipython(), "
    "k.get_parent()['header']['msg_type'])\n"
    "print(sorted(k.session.msg_header('display_data')))",
    # libraries read the cell's code from the request (autologging, get_current_cell)
    PUBLISH + "p = k.get_parent()\nprint(sorted(p), p['msg_type'], p['content']['silent'])\n"
    "print(p['content']['code'].splitlines()[-1])",
]


@pytest.fixture(scope="module")
def reference() -> Iterator[BlockingKernelClient]:
    """The local ``python3`` kernel: what the same cells give there."""
    with running_kernel(kernel_name="python3") as (_, client):
        yield client


@pytest.fixture(scope="module")
def sandboxed(engine_name: str, test_image: str,
              kernelspec: None) -> Iterator[BlockingKernelClient]:
    with running_kernel() as (_, client):
        run(client, "pass")  # the sandbox's start notes, if any, go with a first cell
        yield client


def run(kc: BlockingKernelClient, code: str) -> tuple[dict, list[dict[str, Any]]]:
    """The reply and every iopub message of one execute, up to its idle status."""
    msg_id = kc.execute(code)
    reply = kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:  # a late kernel_info reply
        reply = kc.get_shell_msg(timeout=60)
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return reply, messages
    raise AssertionError("the kernel did not go idle within 60 s")


def shown(messages: list[dict[str, Any]]) -> list[tuple[str, dict, list[bytes]]]:
    """What the frontend is shown: each output message's type, content and buffers, with
    consecutive stream messages of one stream joined (as the notebook's output area joins
    them, and as the kernel may send them)."""
    found: list[tuple[str, dict, list[bytes]]] = []
    for m in messages:
        kind, content = m["msg_type"], dict(m["content"])
        if kind in ("status", "execute_input"):
            continue
        if kind == "stream" and found and found[-1][0] == "stream" and (
                found[-1][1]["name"] == content["name"]):
            found[-1][1]["text"] += content["text"]
            continue
        found.append((kind, content, [bytes(b) for b in m.get("buffers") or []]))
    return found


@pytest.mark.parametrize("code", CELLS)
def test_publishing_through_the_kernel_object_as_ipykernel(
        code: str, reference: BlockingKernelClient, sandboxed: BlockingKernelClient) -> None:
    expected_reply, expected = run(reference, code)
    reply, got = run(sandboxed, code)
    assert reply["content"]["status"] == expected_reply["content"]["status"] == "ok", (
        reply["content"])
    assert shown(got) == shown(expected)
    comm_metadata = [m["metadata"] for m in got if m["msg_type"] == "comm_open"]
    assert comm_metadata == [m["metadata"] for m in expected if m["msg_type"] == "comm_open"]


FORGERIES = """\
k = get_ipython().kernel
p = k.get_parent()
k.session.send(k.iopub_socket, 'status', {'execution_state': 'idle'}, parent=p)
k.session.send(k.iopub_socket, 'execute_reply', {'status': 'ok', 'execution_count': 99}, parent=p)
k.session.send(k.iopub_socket, 'execute_result', {'execution_count': 99, 'data': {'text/plain':
  'forged'}, 'metadata': {}}, parent=p)
k.session.send(k.iopub_socket, 'shutdown_reply', {'status': 'ok', 'restart': False}, parent=p)
k.session.send(k.iopub_socket, 'input_request', {'prompt': 'password:', 'password': True})
k.session.send(k.iopub_socket, 'stream', {'name': 'evil', 'text': 'x'}, parent=p)
k.session.send(k.iopub_socket, 'display_data', {'data': 'not a bundle'}, parent=p)
k.session.send(object(), 'display_data', {'data': {'text/plain': 'elsewhere'}}, parent=p)
k.session.send(k.iopub_socket, 'display_data', {'data': {'text/html':
  '<img src=x onerror="fetch(\\'/api/terminals\\', {method: \\'POST\\'})">'}, 'metadata': {},
  'transient': {'display_id': 'd', 'extra': '<script>'}}, parent=p)
k.session.send(k.iopub_socket, 'clear_output', {'wait': '<script>'}, parent=p)
# the runner's own output path, as user code can call it: the host checks what it forwards
get_ipython().transport.output({'type': 'display', 'data': {'text/plain': 'raw'},
  'transient': {'display_id': 7, 'extra': '<script>'}})
get_ipython().transport.output({'type': 'clear_output', 'wait': '<script>'})
print('still here')
"""


def test_a_cell_cannot_forge_what_is_not_output(sandboxed: BlockingKernelClient) -> None:
    reply, messages = run(sandboxed, FORGERIES)
    assert reply["content"]["status"] == "ok", reply["content"]
    states = [m["content"]["execution_state"] for m in messages if m["msg_type"] == "status"]
    assert states == ["busy", "idle"]
    kinds = {m["msg_type"] for m in messages}
    assert kinds <= {"status", "execute_input", "stream", "display_data", "clear_output"}, kinds
    stderr = "".join(m["content"]["text"] for m in messages
                     if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")
    dropped = stderr.splitlines()
    assert len(dropped) == 8, stderr
    assert all(line.startswith("[agentkernel] kernel.session.send dropped a ") for line in dropped)
    assert "'status' message: not an output message (accepted on kernel.iopub_socket: " \
        "display_data, update_display_data, stream, clear_output, error, comm_open, comm_msg, " \
        "comm_close)" in dropped[0]
    assert "stream 'evil': accepted stdout, stderr" in dropped[5]
    assert "sends output messages on kernel.iopub_socket only" in dropped[7]
    display, raw = [m["content"] for m in messages if m["msg_type"] == "display_data"]
    assert safe_to_show(display["data"]["text/html"]), display
    assert display["transient"] == {"display_id": "d"}
    assert (raw["data"], raw["transient"]) == ({"text/plain": "raw"}, {})
    clears = [m["content"] for m in messages if m["msg_type"] == "clear_output"]
    assert clears == [{"wait": True}, {"wait": False}]
    stdout = "".join(m["content"]["text"] for m in messages
                     if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
    assert stdout == "still here\n"
