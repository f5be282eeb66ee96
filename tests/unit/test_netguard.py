"""The guarded network's rules and its readiness marker, without an engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentkernel import netguard
from agentkernel.config import SandboxConfig
from agentkernel.errors import ConfigError


def chain_rules(script: str, chain: str) -> list[str]:
    """The rules ``script`` adds to ``chain`` of the guard's table, in order."""
    prefix = f"add rule inet {netguard.TABLE} {chain} "
    return [line[len(prefix):] for line in script.splitlines() if line.startswith(prefix)]


def test_every_rule_is_for_the_guarded_bridges_only() -> None:
    script = netguard.table_script("akguard-docker", ["10.0.0.2"])
    rules = chain_rules(script, "input") + chain_rules(script, "forward")
    assert rules and all(rule.startswith("iifname @bridges ") for rule in rules)
    assert f'add element inet {netguard.TABLE} bridges {{ "akguard-docker" }}' in script


def test_nothing_new_reaches_the_host() -> None:
    rules = chain_rules(netguard.table_script("akguard-podman", ["10.0.0.2"]), "input")
    assert [rule.removeprefix("iifname @bridges ") for rule in rules] == [
        "meta nfproto ipv6 drop", "ct state established,related accept", "drop"]


def test_private_ranges_are_dropped_after_replies_and_the_host_resolvers() -> None:
    script = netguard.table_script("akguard-docker", ["10.255.255.53"])
    rules = [rule.removeprefix("iifname @bridges ") for rule in chain_rules(script, "forward")]
    assert rules == ["meta nfproto ipv6 drop", "ct state established,related accept",
                     "ip daddr @nameservers meta l4proto { tcp, udp } th dport 53 accept",
                     "ip daddr @blocked drop"], "the internet is the engine's to forward"
    assert f"add element inet {netguard.TABLE} nameservers {{ 10.255.255.53 }}" in script
    blocked = next(line for line in script.splitlines()
                   if line.startswith(f"add element inet {netguard.TABLE} blocked"))
    assert all(r in blocked for r in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                      "169.254.0.0/16", "127.0.0.0/8"))


def test_the_chains_hook_before_the_engines_filter_chains() -> None:
    """iptables-nft (dockerd, netavark) hooks at the filter priority, 0."""
    script = netguard.table_script("akguard-docker", [])
    for chain in ("input", "forward"):
        assert (f"add chain inet {netguard.TABLE} {chain} {{ type filter hook {chain} "
                f"priority {netguard.PRIORITY}; policy accept; }}") in script
    assert netguard.PRIORITY == "filter - 10"


def test_no_resolvers_leaves_their_set_empty() -> None:
    script = netguard.table_script("akguard-docker", [])
    assert f"flush set inet {netguard.TABLE} nameservers" in script
    assert "add element inet agentkernel nameservers" not in script


def test_host_nameservers_skip_loopback_and_ipv6(tmp_path: Path) -> None:
    first, second = tmp_path / "resolv.conf", tmp_path / "systemd.conf"
    first.write_text("# x\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch lan\n")
    second.write_text("nameserver 10.0.0.2\nnameserver fe80::1\nnameserver 9.9.9.9\n"
                      "nameserver not-an-address\n")
    assert netguard.host_nameservers([str(first), str(second), str(tmp_path / "none")]) == [
        "10.0.0.2", "9.9.9.9"]


def test_the_marker_counts_only_when_no_one_but_root_can_write_it(tmp_path: Path) -> None:
    """Written by root (as setup runs) it counts; by anyone else it never does."""
    markers = tmp_path / "markers"
    assert not netguard.ready("docker", markers)
    markers.mkdir(mode=0o755)
    (markers / "docker").write_text("{}")
    os.chmod(markers / "docker", 0o644)
    assert netguard.ready("docker", markers) == (os.geteuid() == 0)
    assert not netguard.ready("podman", markers)
    os.chmod(markers / "docker", 0o666)
    assert not netguard.ready("docker", markers)
    os.chmod(markers / "docker", 0o644)
    os.chmod(markers, 0o777)
    assert not netguard.ready("docker", markers)


@pytest.mark.parametrize("name", ["host", "none", "bridge", "container:abc"])
def test_a_network_name_that_is_not_a_network_of_its_own_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid network_name"):
        SandboxConfig(network_name=name).resolve()


def test_the_create_request_joins_the_named_network() -> None:
    from agentkernel.sandbox.request import create_request

    on = SandboxConfig(image="x", network=True).resolve()
    assert create_request(on)["HostConfig"]["NetworkMode"] == "agentkernel-guarded"
    bridge = SandboxConfig(image="x", network=True, network_name="").resolve()
    assert "NetworkMode" not in create_request(bridge)["HostConfig"], "the engine's default"
    off = SandboxConfig(image="x", network=False).resolve()
    assert create_request(off)["HostConfig"]["NetworkMode"] == "none"
