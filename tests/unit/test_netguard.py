"""The guarded network's rules and its readiness marker, without an engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentkernel import netguard
from agentkernel.config import SandboxConfig
from agentkernel.errors import ConfigError


def test_nothing_new_reaches_the_host() -> None:
    for kind in ("docker", "podman"):
        chain_in, _ = netguard.chains(kind)
        to_host = netguard.rules(kind, ["10.0.0.2"])["iptables"][chain_in]
        assert to_host == [[*netguard.REPLIES, "-j", "ACCEPT"], ["-j", "DROP"]]


def test_private_ranges_are_dropped_after_replies_and_the_host_resolvers() -> None:
    _, chain_fwd = netguard.chains("docker")
    through = netguard.rules("docker", ["10.255.255.53"])["iptables"][chain_fwd]
    assert through[0][-1] == "RETURN" and "ESTABLISHED,RELATED" in through[0]
    assert through[1][:2] == ["-d", "10.255.255.53"] and through[1][-1] == "RETURN"
    dropped = {rule[1] for rule in through if rule[-1] == "DROP"}
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
            "127.0.0.0/8"} <= dropped
    assert through[-1] == ["-j", "RETURN"], "the internet is the engine's to forward"


def test_no_ipv6_from_the_guarded_network() -> None:
    for chain_rules in netguard.rules("podman", [])["ip6tables"].values():
        assert chain_rules == [["-j", "DROP"]]


def test_docker_forwarding_goes_through_docker_user() -> None:
    jumps = netguard.jumps("docker", "akguard-docker")
    assert [parent for parent, *_ in jumps.values()] == ["INPUT", "DOCKER-USER"]
    assert all(jump[1:3] == ["-i", "akguard-docker"] for jump in jumps.values())
    assert [p for p, *_ in netguard.jumps("podman", "akguard-podman").values()] == [
        "INPUT", "FORWARD"]


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
