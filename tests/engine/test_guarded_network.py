"""The guarded network on the real engines: a sandbox with the network joins it, cannot open a
connection to the host it runs on (one the engine's default bridge lets through), and without
the firewall rules the network stays off or is refused. No traffic goes to a bridge address:
the host is reached at its own interface's address, as a sandbox would reach it."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.kernels import wait_until
from helpers.required import unavailable

from agentkernel import netguard, netwatch
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


@pytest.fixture
def private_service() -> Iterator[tuple[str, int]]:
    """A TCP service on a private address of this machine (10.x): a network namespace of the
    test's own behind a veth pair, as a service on the local network would be; never another
    host's or a container's address."""
    tag = f"{os.getpid() % 100000}"
    namespace, outside, inside = f"ak-guard-{tag}", f"akg{tag}h", f"akg{tag}n"
    subnet = free_private_subnet()
    host_end, service = (str(address) for address in list(subnet.hosts())[:2])
    steps = [["ip", "netns", "add", namespace],
             ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
             ["ip", "link", "set", inside, "netns", namespace],
             ["ip", "addr", "add", f"{host_end}/{subnet.prefixlen}", "dev", outside],
             ["ip", "link", "set", outside, "up"],
             ["ip", "-n", namespace, "addr", "add", f"{service}/{subnet.prefixlen}", "dev",
              inside],
             ["ip", "-n", namespace, "link", "set", inside, "up"],
             ["ip", "-n", namespace, "link", "set", "lo", "up"],
             ["ip", "-n", namespace, "route", "add", "default", "via", host_end]]
    server = None
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, "python3", "-c", SERVE, service, "8080"],
            stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        yield service, 8080
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


SERVE = ("import socket, sys\n"
         "server = socket.create_server((sys.argv[1], int(sys.argv[2])))\n"
         "print('listening', flush=True)\n"
         "while True:\n"
         "    server.accept()[0].close()\n")


def free_private_subnet() -> ipaddress.IPv4Network:
    """A /30 of 10.213.0.0/16 that no route of this host covers (the default route aside)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    taken = [ipaddress.ip_network(line.split()[0]) for line in routes
             if line.split() and line.split()[0] != "default"]
    for candidate in ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=30):
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    pytest.fail(f"no free /30 in 10.213.0.0/16: {routes}")


@contextmanager
def accept_first(bridge: str) -> Iterator[None]:
    """What a firewall reload or an engine inserting last does: an ACCEPT of everything from
    ``bridge`` at the head of iptables' INPUT and FORWARD (test-owned, removed after)."""
    rules = [[chain, "-i", bridge, "-m", "comment", "--comment", f"agentkernel-test-{chain}",
              "-j", "ACCEPT"] for chain in ("INPUT", "FORWARD")]
    try:
        for chain, *rule in rules:
            subprocess.run(["iptables", "-w", "-I", chain, "1", *rule], check=True,
                           capture_output=True)
        yield
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-w", "-D", *rule], capture_output=True)


def probe(sandbox: Sandbox, address: str, port: int) -> str:
    sandbox.write_file("/tmp/probe.py", PROBE.encode())
    return sandbox.exec(f"python3 /tmp/probe.py {address} {port}").stdout.strip()


def test_a_sandbox_with_the_network_joins_the_guarded_network(engine: Engine,
                                                             test_image: str) -> None:
    assert netguard.available(engine), "scripts/setup.sh runs agentkernel network setup"
    with Sandbox(image=test_image, network=True, engine=engine) as sb:
        networks = engine.api.inspect_container(sb.container_id)["NetworkSettings"]["Networks"]
        assert list(networks) == [GUARDED_NETWORK] and sb.notes == []
    assert engine.network_bridge(GUARDED_NETWORK) == netguard.bridge_for(engine)


def _joined(engine: Engine, container_id: str, since: float) -> tuple[float, float | None]:
    """When the engine's events say ``container_id`` started, and joined the guarded network
    (None: no event of its own; Podman's is part of the start)."""
    started = joined = None
    for event in engine.api.events(since=int(since), until=int(time.time()) + 1, decode=True):
        at = int(event.get("timeNano") or 0) / 1e9
        actor = event.get("Actor", {})
        if event.get("Type") == "container" and actor.get("ID") == container_id:
            started = at if event.get("Action") == "start" else started
        elif (event.get("Type") == "network" and event.get("Action") == "connect"
              and actor.get("Attributes", {}).get("container") == container_id
              and actor.get("Attributes", {}).get("name") == GUARDED_NETWORK):
            joined = at
    assert started is not None, "the start is in the engine's events"
    return started, joined


INTERFACES = ("import socket, sys\n"
              "print(sorted(name for _, name in socket.if_nameindex()))\n"
              "print(socket.gethostbyname(socket.gethostname()) != '127.0.0.1')\n")


@pytest.mark.parametrize("ports", [False, True], ids=["no-port", "published-port"])
def test_a_docker_sandbox_joins_the_network_before_anything_of_ours_runs(
        engine: Engine, test_image: str, ports: bool) -> None:
    """On Docker a sandbox joins the guarded network once started, not during its start
    (0.1 s off it): before the start returns, so the first thing run in it already has its
    interface and its name in the network; one that publishes a port joins at the start,
    where Docker maps it. Podman joins at the start."""
    since = time.time() - 1
    published = ["8000"] if ports else []
    with Sandbox(image=test_image, network=True, engine=engine, ports=published) as sb:
        result = sb.exec(["python3", "-c", INTERFACES])
        assert result.stdout.splitlines() == ["['eth0', 'lo']", "True"], result
        if engine.kind == "docker":  # its name, from the network's own DNS server
            assert sb.exec(["getent", "hosts", sb.container_name]).ok
        started, joined = _joined(engine, sb.container_id, since)
    if engine.kind == "docker":
        assert joined is not None and (joined > started) == (not ports), (started, joined)
    else:
        assert joined is None or joined <= started, (started, joined)


def forward_chains() -> list[tuple[int, str, str, str]]:
    """(priority, family, table, chain) of every base chain IPv4 forwarding passes, first first."""
    listed = json.loads(subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True,
                                       text=True, check=True).stdout)["nftables"]
    return sorted((item["chain"]["prio"], item["chain"]["family"], item["chain"]["table"],
                   item["chain"]["name"]) for item in listed
                  if item.get("chain", {}).get("hook") == "forward"
                  and item["chain"]["family"] in ("ip", "inet"))


def test_the_guard_is_evaluated_first_after_the_engines_and_a_reload(
        engine: Engine, test_image: str) -> None:
    """With a sandbox started on the guarded network (the engine, netavark on Podman, inserts
    its rules), netavark's reload and an ACCEPT at the head of iptables' FORWARD, the guard's
    chain is still the first base chain forwarded traffic meets, it drops the blocked ranges
    for the guarded bridge, and the start's check still finds it in force."""
    bridge = netguard.bridge_for(engine)
    with Sandbox(image=test_image, network=True, engine=engine) as sb:
        assert sb.effective.network
        if engine.kind == "podman":
            subprocess.run(["podman", "network", "reload", "--all"], check=True,
                           capture_output=True)
        with accept_first(bridge):
            first, *others = forward_chains()
            assert first[1:] == ("inet", netguard.TABLE, "forward")
            assert others and all(first[0] < later[0] for later in others), others
            listing = subprocess.run(["nft", "list", "table", "inet", netguard.TABLE],
                                     capture_output=True, text=True, check=True).stdout
            assert f'"{bridge}"' in listing
            assert "iifname @bridges ip daddr @blocked drop" in listing
            assert "169.254.0.0/16" in listing and "10.0.0.0/8" in listing
            assert netguard.available(engine)


def test_a_start_refuses_the_network_when_the_guard_is_not_in_force(
        engine: Engine, test_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The markers stand but the table is gone (a firewall reload that flushed the ruleset):
    a network asked for is refused in one line, the profile's network is left off."""
    monkeypatch.setattr(netguard, "TABLE", "agentkernel-test-absent")
    with pytest.raises(SandboxError, match="the network is not available: the guarded "):
        Sandbox(image=test_image, engine=engine, network=True).start()
    with Sandbox(image=test_image, engine=engine) as sb:
        assert not sb.effective.network and "no network" in sb.notes[0]


def test_a_table_changed_since_setup_is_not_in_force(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Setup's table on a bridge no engine has (a table of the test's own): in force as set
    up, not once a rule is slipped into it, nor once it is gone."""
    table, bridge = f"agentkernel-test-{os.getpid()}", "akg-test-none"
    monkeypatch.setattr(netguard, "TABLE", table)
    markers = tmp_path / "markers"
    try:
        netguard.guard(bridge, ["10.0.0.2"], markers)
        assert netguard.in_force(bridge, markers)
        assert not netguard.in_force("akg-test-other", markers)
        netguard.guard(bridge, ["10.0.0.2"], markers)
        assert netguard.in_force(bridge, markers), "setup is idempotent"
        subprocess.run(["nft", "insert", "rule", "inet", table, "forward", "iifname",
                        "@bridges", "accept"], check=True, capture_output=True)
        assert not netguard.in_force(bridge, markers)
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
    assert not netguard.in_force(bridge, markers)


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


def test_the_guard_holds_whatever_the_engines_and_a_reload_insert_after_it(
        engine: Engine, test_image: str, listener: int,
        private_service: tuple[str, int]) -> None:
    """Rules inserted after setup's (the engine's own for a started sandbox, netavark's reload,
    an ACCEPT of everything from the bridge at the head of INPUT and FORWARD) do not let a
    sandbox on the guarded network reach a private address on this machine, nor the host;
    the engine's default bridge reaches the private service (the control)."""
    address, port = private_service
    with Sandbox(image=test_image, network=True, network_name="", engine=engine) as open_sb:
        assert probe(open_sb, address, port) == "connected"
    with Sandbox(image=test_image, network=True, engine=engine) as guarded:
        if engine.kind == "podman":
            subprocess.run(["podman", "network", "reload", "--all"], check=True,
                           capture_output=True)
        with accept_first(netguard.bridge_for(engine)):
            assert probe(guarded, address, port).startswith("refused")
            assert probe(guarded, host_address(), listener).startswith("refused")


def test_the_keeper_puts_back_a_table_removed_or_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keeper's check (agentkernel/netwatch.py) on a table of the test's own: setup's
    table is kept; removed (a firewall reload) or with a rule slipped in, it is put back as
    setup left it and in force again; a keeper that never saw setup's table cannot put it
    back, and removes setup's digest instead, so no start trusts it."""
    table, bridge = f"agentkernel-test-keep-{os.getpid()}", "akg-test-keep"
    monkeypatch.setattr(netguard, "TABLE", table)
    markers = tmp_path / "markers"

    def listing() -> str:
        return netguard.run_nft("list", "table", "inet", table)

    try:
        netguard.guard(bridge, ["10.0.0.2"], markers)
        setup_left = listing()
        keeper = netwatch.Keeper(markers)
        assert keeper.check() == "kept" and keeper.check() == "kept"
        netguard.run_nft("delete", "table", "inet", table)
        assert not netguard.in_force(bridge, markers)
        assert keeper.check() == "restored"
        assert listing() == setup_left and netguard.in_force(bridge, markers)
        netguard.run_nft("insert", "rule", "inet", table, "forward", "iifname", "@bridges",
                         "accept")
        assert keeper.check() == "restored"
        assert listing() == setup_left and netguard.in_force(bridge, markers)
        netguard.run_nft("insert", "rule", "inet", table, "forward", "iifname", "@bridges",
                         "accept")
        late = netwatch.Keeper(markers)
        assert late.check() == "unguarded"
        assert not (markers / netguard.TABLE_MARKER).exists()
        assert not netguard.in_force(bridge, markers)
        assert late.check() == "waiting"
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)


def test_the_running_keeper_puts_back_the_guards_table() -> None:
    """The keeper set-up started (``agentkernel network watch``) notices the guard's own table
    removed, as a firewall reload does, and puts it back as it was within a second, in force
    again for every engine's bridge."""
    if not netguard.kept():
        unavailable("agentkernel network watch is not running (scripts/setup.sh starts it)")
    before = netguard.run_nft("list", "table", "inet", netguard.TABLE)
    bridges = [bridge for bridge in netguard.BRIDGES.values() if f'"{bridge}"' in before]
    assert bridges and all(netguard.in_force(bridge) for bridge in bridges)
    netguard.run_nft("delete", "table", "inet", netguard.TABLE)
    wait_until(lambda: all(netguard.in_force(bridge) for bridge in bridges), 5,
               "the guard's table put back by its keeper")
    assert netguard.run_nft("list", "table", "inet", netguard.TABLE) == before


def test_without_cap_net_admin_the_keeper_is_the_evidence(tmp_path: Path) -> None:
    """A kernel run by a user cannot read the ruleset (netlink answers EPERM): its start
    trusts setup's digest while the table's keeper runs, and refuses the guarded network
    when no keeper runs (a marker naming a process that is gone, or none)."""
    if not netguard.kept():
        unavailable("agentkernel network watch is not running (scripts/setup.sh starts it)")
    dead = subprocess.Popen(["true"])  # its pid, once reaped: a process that is gone
    dead.wait()
    cases = {"running": None, "gone": {"pid": dead.pid, "started": "1"}, "none": {}}
    answers = {}
    for case, watch in cases.items():
        markers = netguard.MARKERS
        if watch is not None:
            markers = tmp_path / case
            markers.mkdir(mode=0o755)
            for name in ("docker", netguard.TABLE_MARKER):
                (markers / name).write_text((netguard.MARKERS / name).read_text())
            if watch:
                (markers / netguard.WATCH_MARKER).write_text(json.dumps(watch))
        script = ("import sys\nfrom pathlib import Path\n"
                  "from agentkernel import netguard, nftstate\n"
                  "try:\n"
                  "    nftstate.read_table('inet', netguard.TABLE)\n"
                  "except PermissionError:\n"
                  "    print(netguard.in_force('akguard-docker', Path(sys.argv[1])))\n")
        done = subprocess.run(["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
                               sys.executable, "-c", script, str(markers)],
                              capture_output=True, text=True, check=True)
        answers[case] = done.stdout.strip()
    assert answers == {"running": "True", "gone": "False", "none": "False"}
