"""The kernel's channel ports, listened on before ipykernel loads, and taken over by ZeroMQ."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import zmq
from jupyter_client.connect import write_connection_file

from agentkernel_kernel.app import EarlyHeartbeat
from agentkernel_kernel.early_listen import CHANNELS, HEARTBEAT, connection_file, listen_early


@pytest.mark.parametrize("argv", [
    ["-f", "/k.json"], ["--debug", "-f", "/k.json"], ["-f=/k.json"], ["--f=/k.json"],
])
def test_the_connection_file_argument(argv: list[str]) -> None:
    assert connection_file(argv) == "/k.json"


@pytest.mark.parametrize("argv", [[], ["-f"], ["--file", "/k.json"]])
def test_no_connection_file_argument(argv: list[str]) -> None:
    assert connection_file(argv) is None


def _connection(tmp_path: Path, **overrides: object) -> tuple[Path, dict]:
    """A connection file as jupyter_client writes one (free ports chosen), with overrides."""
    path, info = write_connection_file(str(tmp_path / "kernel.json"), key=b"k")
    info = {**json.loads(Path(path).read_text()), **overrides}
    Path(path).write_text(json.dumps(info))
    return Path(path), info


def test_a_message_sent_before_the_kernel_binds_arrives_at_once(tmp_path: Path) -> None:
    """The client connects while the kernel still loads; the ROUTER that takes the listening
    socket over gets the message without waiting for ZeroMQ's reconnect."""
    path, info = _connection(tmp_path)
    listeners = listen_early(["-f", str(path)])
    assert set(listeners) == {info[key] for key in (*CHANNELS, HEARTBEAT)}
    context = zmq.Context()
    client = context.socket(zmq.DEALER)
    kernel = context.socket(zmq.ROUTER)
    try:
        client.connect(f"tcp://127.0.0.1:{info['shell_port']}")
        client.send(b"kernel_info_request")
        kernel.setsockopt(zmq.USE_FD, listeners.pop(info["shell_port"]).detach())
        kernel.bind(f"tcp://127.0.0.1:{info['shell_port']}")
        assert kernel.poll(50), "the message waited for a reconnect"
        identity, body = kernel.recv_multipart()
        assert body == b"kernel_info_request"
        kernel.send_multipart([identity, b"kernel_info_reply"])
        assert client.poll(1000) and client.recv() == b"kernel_info_reply"
    finally:
        for listener in listeners.values():
            listener.close()
        client.close(0)
        kernel.close(0)
        context.term()


def test_the_heartbeat_answers_a_ping_sent_before_it_binds(tmp_path: Path) -> None:
    """ipykernel's heartbeat thread takes over its port's listening socket: the port was held
    from the start (no other process could take it), and a ping already sent is echoed."""
    path, info = _connection(tmp_path)
    listeners = listen_early(["-f", str(path)])
    context = zmq.Context()
    client = context.socket(zmq.REQ)
    heartbeat = EarlyHeartbeat(zmq.Context(), ("tcp", "127.0.0.1", info["hb_port"]),
                               listener_fd=listeners.pop(info["hb_port"]).detach())
    try:
        client.connect(f"tcp://127.0.0.1:{info['hb_port']}")
        client.send(b"ping")
        heartbeat.start()
        assert client.poll(2000) and client.recv() == b"ping"
        assert heartbeat.is_alive()
    finally:
        for listener in listeners.values():
            listener.close()
        client.close(0)
        context.term()
        heartbeat.context.term()


@pytest.mark.parametrize("overrides", [
    {"transport": "ipc"}, {"ip": "localhost"}, {"ip": ""},
])
def test_anything_but_tcp_on_an_address_is_left_to_ipykernel(tmp_path: Path,
                                                             overrides: dict) -> None:
    path, _ = _connection(tmp_path, **overrides)
    assert listen_early(["-f", str(path)]) == {}


def test_a_missing_or_broken_file_is_left_to_ipykernel(tmp_path: Path) -> None:
    assert listen_early(["-f", str(tmp_path / "none.json")]) == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert listen_early(["-f", str(tmp_path / "bad.json")]) == {}


def test_a_port_taken_is_skipped(tmp_path: Path) -> None:
    path, info = _connection(tmp_path)
    taken = socket.socket()
    taken.bind(("127.0.0.1", info["shell_port"]))
    taken.listen(1)
    try:
        listeners = listen_early(["-f", str(path)])
        assert info["shell_port"] not in listeners and info["iopub_port"] in listeners
    finally:
        taken.close()
        for listener in listeners.values():
            listener.close()
