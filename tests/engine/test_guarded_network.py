"""The guarded network on the real engines: a sandbox with the network joins it, cannot open a
connection to the host it runs on (one the engine's default bridge lets through), and without
the firewall rules the network stays off or is refused. No traffic goes to a bridge address:
the host is reached at its own interface's address, as a sandbox would reach it."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentkernel import netguard
from agentkernel.config.options import GUARDED_NETWORK
from agentkernel.engine import Engine
from agentkernel.errors import SandboxError
from agentkernel.manager import SandboxManager
from agentkernel.sandbox import Sandbox

pytestmark = pytest.mark.engine

PROBE = ("import socket, sys\n"
         "try:\n"
         "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
         "    print('connected')\n"
         "except OSError as err:\n"
         "    print('refused', type(err).__name__)\n")


def host_address() -> str:
    """An IPv4 address of this host on an interface that is no bridge of an engine."""
    lines = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for line in lines:
        name, address = line.split()[1], line.split()[3].split("/")[0]
        bridge = name.startswith(("lo", "docker", "akguard", "aktls", "podman", "cni", "veth"))
        if not bridge and not ipaddress.ip_address(address).is_loopback:
            return address
    pytest.fail(f"no host address outside the engines' bridges: {lines}")


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP service on every host address, like one a user runs beside Jupyter."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(30)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    server.close()


def probe(sandbox: Sandbox, address: str, port: int) -> str:
    sandbox.write_file("/tmp/probe.py", PROBE.encode())
    return sandbox.exec(f"python3 /tmp/probe.py {address} {port}").stdout.strip()


def test_a_sandbox_with_the_network_joins_the_guarded_network(engine: Engine,
                                                             test_image: str) -> None:
    assert netguard.available(engine), "scripts/setup.sh runs agentkernel network setup"
    with Sandbox(image=test_image, network=True, engine=engine) as sb:
        networks = engine.api.inspect_container(sb.container_id)["NetworkSettings"]["Networks"]
        assert list(networks) == [GUARDED_NETWORK] and sb.notes == []
    bridge = netguard.bridge_for(engine)
    assert engine.network_bridge(GUARDED_NETWORK) == bridge
    chain_in, chain_fwd = netguard.chains(engine.kind)
    for parent, *jump in netguard.jumps(engine.kind, bridge).values():
        listed = subprocess.run(["iptables", "-w", "-S", parent], capture_output=True,
                                text=True, check=True).stdout
        assert f"-A {parent} {' '.join(jump)}" in listed
    rules = subprocess.run(["iptables", "-w", "-S", chain_in], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert rules[-1] == f"-A {chain_in} -j DROP", "nothing new reaches the host from it"
    forwarded = subprocess.run(["iptables", "-w", "-S", chain_fwd], capture_output=True,
                               text=True, check=True).stdout
    assert f"-A {chain_fwd} -d 169.254.0.0/16 -j DROP" in forwarded


def test_the_host_is_out_of_reach_from_the_guarded_network(engine: Engine, test_image: str,
                                                          listener: int) -> None:
    """A service listening on every host address: the engine's default bridge reaches it
    (the control, so the probe can fail), the guarded network does not."""
    address = host_address()
    with Sandbox(image=test_image, network=True, network_name="", engine=engine) as open_sb:
        assert probe(open_sb, address, listener) == "connected"
    with Sandbox(image=test_image, network=True, engine=engine) as guarded:
        assert probe(guarded, address, listener).startswith("refused")


def test_without_the_rules_the_network_stays_off(engine: Engine, test_image: str,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No marker (a host rebooted since setup): the profile's network is left off, with a
    note the user reads; a network asked for is refused in one line."""
    assert not engine.remote, "the marker speaks for this host's engines"
    monkeypatch.setattr(netguard, "MARKERS", tmp_path / "no-markers")
    with Sandbox(image=test_image, engine=engine) as sb:
        assert not sb.effective.network and sb.ip is None
        (note,) = sb.notes
        assert "no network" in note and "agentkernel network setup" in note
    for asked in ({"network": True}, {"ports": ["8000"]}):
        with pytest.raises(SandboxError, match="the network is not available: the guarded "):
            Sandbox(image=test_image, engine=engine, **asked).start()
    manager = SandboxManager()
    try:
        printed: list[tuple[str, str]] = []
        manager.execute("1", on_event=lambda _e: None, out=lambda *line: printed.append(line))
        (stream, text), = printed
        assert stream == "stderr" and text.startswith("[agentkernel] the sandbox has no network")
        current = manager.sandbox
        with pytest.raises(SandboxError, match="the network is not available"):
            manager.start(manager.operator.copy(network=True))
        assert manager.sandbox is current and current.is_running, "the sandbox is kept"
    finally:
        manager.shutdown()
