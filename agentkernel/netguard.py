"""The guarded network: sandboxes with the network reach the internet, not the host they run on.

An engine's default bridge forwards a sandbox's traffic wherever the host reaches: the host's
own services (on every address it has, the bridge's included), the local network, other
containers, a cloud's metadata endpoint. ``agentkernel network setup`` (root, once per boot)
makes one bridge network per engine, ``GUARDED_NETWORK`` on a fixed interface (``BRIDGES``),
and firewall rules for that interface (:func:`rules`):

- to the host itself (INPUT): only replies to connections the host opened (published ports);
  Podman's network has no DNS server of its own on the bridge (its containers use the host's
  resolvers), and Docker's answers inside each container (127.0.0.11);
- through the host (FORWARD): no private, loopback, link-local, shared, multicast or reserved
  address, except DNS to the host's own resolvers (often private in clouds); replies pass;
- no IPv6 at all (the network has none).

Setup then writes a marker under ``/run`` (a tmpfs: cleared at boot, as the rules are). A start
puts a sandbox on the guarded network only while the marker is there (:func:`ready`); without
it the network stays off, or the start is refused when the network was asked for.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from .config.options import GUARDED_NETWORK
from .engine import Engine
from .errors import SandboxError, one_line

BRIDGES = {"docker": "akguard-docker", "podman": "akguard-podman"}  # at most 15 characters
LABEL = "agentkernel.network"
MARKERS = Path("/run/agentkernel")
LOOPBACK_NAMES = ("localhost",)
# Where a sandbox on the guarded network may not send anything but replies (RFC 6890 and the
# shared, multicast and reserved ranges): the host's networks, other containers, metadata.
BLOCKED_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
              "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16",
              "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
              "240.0.0.0/4")
RESOLV_FILES = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
REPLIES = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"]


def chains(kind: str) -> tuple[str, str]:
    """The (input, forward) chains of ``kind``'s guarded network."""
    return f"AK-GUARD-IN-{kind.upper()}", f"AK-GUARD-FWD-{kind.upper()}"


def rules(kind: str, nameservers: Iterable[str]) -> dict[str, dict[str, list[list[str]]]]:
    """The rules of ``kind``'s guarded network: {tool: {chain: [rule arguments]}}."""
    chain_in, chain_fwd = chains(kind)
    dns = [[*proto, "--dport", "53"] for proto in (["-p", "udp"], ["-p", "tcp"])]
    to_host = [[*REPLIES, "-j", "ACCEPT"], ["-j", "DROP"]]
    through = [[*REPLIES, "-j", "RETURN"]]
    through += [["-d", server, *port, "-j", "RETURN"] for server in nameservers for port in dns]
    through += [["-d", block, "-j", "DROP"] for block in BLOCKED_V4]
    through.append(["-j", "RETURN"])
    return {"iptables": {chain_in: to_host, chain_fwd: through},
            "ip6tables": {chain_in: [["-j", "DROP"]], chain_fwd: [["-j", "DROP"]]}}


def jumps(kind: str, bridge: str) -> dict[str, list[str]]:
    """Where each chain is entered: {chain: [parent chain, rule arguments]}. Docker's
    forwarding rules come after its DOCKER-USER chain, which it never flushes; Podman's
    (netavark's) after the jump setup puts first in FORWARD."""
    chain_in, chain_fwd = chains(kind)
    return {chain_in: ["INPUT", "-i", bridge, "-j", chain_in],
            chain_fwd: ["DOCKER-USER" if kind == "docker" else "FORWARD", "-i", bridge,
                        "-j", chain_fwd]}


def host_nameservers(files: Iterable[str] = RESOLV_FILES) -> list[str]:
    """The host's IPv4 resolvers that a container's DNS may be forwarded to (not loopback:
    engines replace those with the ones behind them)."""
    found: list[str] = []
    for name in files:
        try:
            lines = Path(name).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    address = ipaddress.ip_address(parts[1])
                except ValueError:
                    continue
                if address.version == 4 and not address.is_loopback and parts[1] not in found:
                    found.append(parts[1])
    return found


def ready(kind: str, markers: Path | None = None) -> bool:
    """Whether ``kind``'s guarded network has its rules on this host since the last boot:
    setup's marker (in ``markers``, default MARKERS), in a folder and file only root can
    write."""
    markers = markers or MARKERS
    try:
        folder, marker = markers.stat(), (markers / kind).stat()
    except OSError:
        return False
    unsafe = stat.S_IWGRP | stat.S_IWOTH
    return all(s.st_uid == 0 and not s.st_mode & unsafe for s in (folder, marker))


def bridge_for(engine: Engine) -> str:
    """The guarded network's interface on ``engine``'s host: one per kind for the local
    engines, one per URL for an engine reached over the network (a second daemon here)."""
    if not engine.remote:
        return BRIDGES[engine.kind]
    return "akguard-" + hashlib.sha256(engine.base_url.encode()).hexdigest()[:7]


def available(engine: Engine) -> bool:
    """Whether a sandbox of ``engine`` may join the guarded network: for a local engine, its
    rules are in place on this host (:func:`ready`, no engine request); for a remote one, the
    network exists there (its rules are that host's: setup runs there, after every boot)."""
    if engine.remote:
        return engine.network_bridge(GUARDED_NETWORK) is not None
    return engine.kind in BRIDGES and ready(engine.kind)


def setup(engine: Engine, markers: Path | None = None) -> str:
    """Make ``engine``'s guarded network and its firewall rules (root), then its marker in
    ``markers`` (default MARKERS); what was done."""
    markers = markers or MARKERS
    if os.geteuid() != 0:
        raise SandboxError("agentkernel network setup needs root: it writes firewall rules")
    host = urlsplit(engine.base_url.replace("tcp://", "https://", 1)).hostname or ""
    if engine.remote and host not in LOOPBACK_NAMES and not _is_loopback(host):
        raise SandboxError(f"the engine at {engine.base_url} runs on another host: run "
                           "agentkernel network setup there (the rules are that host's)")
    kind = engine.kind
    if kind not in BRIDGES:
        raise SandboxError(f"no guarded network for {kind} engines: accepted docker, podman")
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            raise SandboxError(f"{tool} not found: install the iptables package")
    bridge = bridge_for(engine)
    found = engine.network_bridge(GUARDED_NETWORK)
    if found is None:
        engine.create_network(GUARDED_NETWORK, bridge, {LABEL: "guarded"})
    elif found != bridge:
        raise SandboxError(f"network {GUARDED_NETWORK} exists on interface {found}, not "
                           f"{bridge}: remove it ({kind} network rm {GUARDED_NETWORK})")
    servers = host_nameservers()
    for tool, table in rules(kind, servers).items():
        for chain, chain_rules in table.items():
            _iptables(tool, "-N", chain, check=False)
            _iptables(tool, "-F", chain)
            for rule in chain_rules:
                _iptables(tool, "-A", chain, *rule)
        for parent, *jump in jumps(kind, bridge).values():
            if parent == "DOCKER-USER" and not _iptables(tool, "-n", "-L", parent,
                                                        check=False):
                parent = "FORWARD"  # a Docker without its iptables chains (or IPv6 ones)
            if not _iptables(tool, "-C", parent, *jump, check=False):
                _iptables(tool, "-I", parent, "1", *jump)
    same_bridge = _bridged_traffic_filtered()
    if not engine.remote:
        markers.mkdir(mode=0o755, exist_ok=True)
        (markers / kind).write_text(json.dumps({"network": GUARDED_NETWORK, "bridge": bridge,
                                                "nameservers": servers}))
    note = "" if same_bridge or kind == "docker" else (
        "; sandboxes on it can reach each other: bridged traffic is not filtered "
        "(modprobe br_netfilter)")
    return f"{kind}: network {GUARDED_NETWORK} on {bridge}, firewall rules in place{note}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _iptables(tool: str, *args: str, check: bool = True) -> bool:
    """Run ``tool -w ARGS``; False when it fails and ``check`` is off."""
    done = subprocess.run([tool, "-w", *args], capture_output=True, text=True)
    if done.returncode != 0 and check:
        raise SandboxError(f"{tool} {' '.join(args)} failed: {one_line(done.stderr)}")
    return done.returncode == 0


def _bridged_traffic_filtered() -> bool:
    """Whether traffic between two containers of one bridge passes the FORWARD chain."""
    path = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not path.exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True)
    try:
        if path.read_text().strip() != "1":
            path.write_text("1")
        return path.read_text().strip() == "1"
    except OSError:
        return False
