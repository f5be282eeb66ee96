"""The guarded network: sandboxes with the network reach the internet, not the host they run on.

An engine's default bridge forwards a sandbox's traffic wherever the host reaches: the host's
own services (on every address it has, the bridge's included), the local network, other
containers, a cloud's metadata endpoint. ``agentkernel network setup`` (root, once per boot)
makes one bridge network per engine, ``GUARDED_NETWORK`` on a fixed interface (``BRIDGES``),
and puts that interface under the guard: an nftables table of agentkernel's own
(``inet agentkernel``, :func:`table_script`), whose chains hook input and forward before the
engines' (``PRIORITY``) and whose drops no later accept can undo (a drop is final in nftables,
an accept only ends its own chain), whoever inserts rules after it (dockerd, netavark, a
firewall reload):

- to the host itself (input): only replies to connections the host opened (published ports);
  Podman's network has no DNS server of its own on the bridge (its containers use the host's
  resolvers), and Docker's answers inside each container (127.0.0.11);
- through the host (forward): no private, loopback, link-local, shared, multicast or reserved
  address, except DNS to the host's own resolvers (often private in clouds); replies pass;
- no IPv6 at all (the network has none).

Setup then writes markers under ``/run`` (a tmpfs: cleared at boot, as the rules are): one per
engine kind, and the digest of the table's listing. A start puts a sandbox on the guarded
network only while its kind's marker is there and the table is in the kernel as setup left it
(:func:`available`, asked at every start); otherwise the network stays off, or the start is
refused when the network was asked for.
"""

from __future__ import annotations

import fcntl
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

from . import nftstate, procs
from .config.options import GUARDED_NETWORK
from .engine import Engine
from .errors import SandboxError, one_line

BRIDGES = {"docker": "akguard-docker", "podman": "akguard-podman"}  # at most 15 characters
LABEL = "agentkernel.network"
MARKERS = Path("/run/agentkernel")
TABLE_MARKER = "nftables"  # in MARKERS: the table's digest (nftstate) as setup left it
WATCH_MARKER = "watch"  # in MARKERS: the table's keeper (netwatch.py): {"pid": .., "started": ..}
LOOPBACK_NAMES = ("localhost",)
TABLE = "agentkernel"  # family inet: IPv4 and IPv6 in one table
# Before the engines' own chains (iptables-nft's, at the filter priority, 0), though a drop in
# any base chain is final in nftables whatever the order: an accept of theirs cannot undo it.
PRIORITY = "filter - 10"
# Where a sandbox on the guarded network may not send anything but replies (RFC 6890 and the
# shared, multicast and reserved ranges): the host's networks, other containers, metadata.
BLOCKED_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
              "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16",
              "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
              "240.0.0.0/4")
RESOLV_FILES = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")


def table_script(bridge: str, nameservers: Iterable[str]) -> str:
    """The nft script that puts ``bridge`` under the guard (one transaction, idempotent):
    the table, its sets (bridges kept, resolvers and blocked ranges replaced) and its two
    chains, rewritten."""
    def elements(name: str, items: Iterable[str]) -> str:
        listed = ", ".join(items)
        return f"add element inet {TABLE} {name} {{ {listed} }}\n" if listed else ""

    bridges = "iifname @bridges"
    head = [f'add table inet {TABLE} {{ comment "agentkernel network setup"; }}',
            f"add set inet {TABLE} bridges {{ type ifname; }}",
            f"add set inet {TABLE} nameservers {{ type ipv4_addr; }}",
            f"flush set inet {TABLE} nameservers",
            f"add set inet {TABLE} blocked {{ type ipv4_addr; flags interval; }}",
            f"flush set inet {TABLE} blocked"]
    chains = []
    for chain, rules in (
            ("input", ["meta nfproto ipv6 drop", "ct state established,related accept",
                       "drop"]),
            ("forward", ["meta nfproto ipv6 drop", "ct state established,related accept",
                         "ip daddr @nameservers meta l4proto { tcp, udp } th dport 53 accept",
                         "ip daddr @blocked drop"])):
        chains += [f"add chain inet {TABLE} {chain} {{ type filter hook {chain} priority "
                   f"{PRIORITY}; policy accept; }}", f"flush chain inet {TABLE} {chain}"]
        chains += [f"add rule inet {TABLE} {chain} {bridges} {rule}" for rule in rules]
    return ("\n".join(head) + "\n" + elements("bridges", [f'"{bridge}"'])
            + elements("nameservers", nameservers) + elements("blocked", BLOCKED_V4)
            + "\n".join(chains) + "\n")


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


def kept(markers: Path | None = None) -> bool:
    """Whether the table's keeper (``agentkernel network watch``, netwatch.py) recorded in
    ``markers`` runs: its marker is root's and writable by root only, and the process with
    its pid started when it says."""
    markers = markers or MARKERS
    if not ready(WATCH_MARKER, markers):
        return False
    try:
        recorded = json.loads((markers / WATCH_MARKER).read_text(encoding="utf-8"))
        return procs.start_time(int(recorded["pid"])) == str(recorded["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def bridge_for(engine: Engine) -> str:
    """The guarded network's interface on ``engine``'s host: one per kind for the local
    engines, one per URL for an engine reached over the network (a second daemon here)."""
    if not engine.remote:
        return BRIDGES[engine.kind]
    return "akguard-" + hashlib.sha256(engine.base_url.encode()).hexdigest()[:7]


def available(engine: Engine) -> bool:
    """Whether a sandbox of ``engine`` may join the guarded network: for a local engine, its
    rules are in force on this host (:func:`ready` and :func:`in_force`, no engine request);
    for a remote one, the network exists there (its rules are that host's: setup runs there,
    after every boot)."""
    if engine.remote:
        return engine.network_bridge(GUARDED_NETWORK) is not None
    return (engine.kind in BRIDGES and ready(engine.kind)
            and in_force(BRIDGES[engine.kind]))


def in_force(bridge: str, markers: Path | None = None) -> bool:
    """Whether the guard's table is in the kernel as setup left it (the digest in
    ``markers``), ``bridge`` among the interfaces it guards: asked at every start, as a
    firewall reload may have removed it, or anyone changed it. Reading the ruleset needs
    CAP_NET_ADMIN: without it (a kernel run by a user), setup's digest is the evidence while
    the table's keeper runs (:func:`kept`), which puts back a table changed or removed and
    removes the digest when it cannot."""
    markers = markers or MARKERS
    try:
        state = nftstate.read_table("inet", TABLE)
    except PermissionError:
        return ready(TABLE_MARKER, markers) and kept(markers)
    except OSError:
        return False
    if state is None or bridge.encode() not in state.keys("bridges"):
        return False
    try:
        recorded = (markers / TABLE_MARKER).read_text(encoding="utf-8")
    except OSError:
        return False
    return ready(TABLE_MARKER, markers) and recorded == state.digest


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
    if shutil.which("nft") is None:
        raise SandboxError("nft not found: install the nftables package")
    bridge = bridge_for(engine)
    found = engine.network_bridge(GUARDED_NETWORK)
    if found is None:
        engine.create_network(GUARDED_NETWORK, bridge, {LABEL: "guarded"})
    elif found != bridge:
        raise SandboxError(f"network {GUARDED_NETWORK} exists on interface {found}, not "
                           f"{bridge}: remove it ({kind} network rm {GUARDED_NETWORK})")
    servers = host_nameservers()
    guard(bridge, servers, markers)
    if not engine.remote:
        write_marker(markers / kind, json.dumps(
            {"network": GUARDED_NETWORK, "bridge": bridge, "nameservers": servers}))
    same_bridge = _bridged_traffic_filtered()
    note = "" if same_bridge or kind == "docker" else (
        "; sandboxes on it can reach each other: bridged traffic is not filtered "
        "(modprobe br_netfilter)")
    return f"{kind}: network {GUARDED_NETWORK} on {bridge}, firewall rules in place{note}"


def guard(bridge: str, nameservers: Iterable[str], markers: Path) -> None:
    """Put ``bridge`` under the guard's table (root) and record the table's digest in
    ``markers``, one setup at a time."""
    markers.mkdir(mode=0o755, exist_ok=True)
    with open(markers / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run_nft("-f", "-", script=table_script(bridge, nameservers))
        state = nftstate.read_table("inet", TABLE)
        write_marker(markers / TABLE_MARKER, state.digest if state else "")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_nft(*args: str, script: str = "") -> str:
    """Run ``nft ARGS`` with ``script`` on its stdin; its output."""
    done = subprocess.run(["nft", *args], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(f"nft {' '.join(args)} failed: {one_line(done.stderr)}")
    return done.stdout


def write_marker(path: Path, text: str) -> None:
    """Write a marker in place of any before it (root's, 0644)."""
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    part.chmod(0o644)
    part.replace(path)


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
