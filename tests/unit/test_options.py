"""The sandbox options: one table, the same flags everywhere, and their effect on the request."""

from __future__ import annotations

import argparse
import ast
import inspect

import pytest
from traitlets import Int

from agentkernel import cli, commands
from agentkernel.config import SandboxConfig, options, sandbox_config
from agentkernel.errors import ConfigError
from agentkernel.sandbox.request import MB, create_request


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def run_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    return parser._subparsers._group_actions[0].choices["run"]


def test_magic_and_command_line_take_the_same_sandbox_flags():
    start = commands._subcommands()["start"].parser
    sandbox_flags = {flag for o in options.OPTIONS for flag in o.flags}
    sandbox_flags |= {"--no-" + o.flag[2:] for o in options.OPTIONS if o.kind == "tristate"}
    assert sandbox_flags <= flags_of(start) and sandbox_flags <= flags_of(run_parser())
    assert flags_of(start) - sandbox_flags == {"-h", "--help"}
    assert flags_of(run_parser()) - sandbox_flags == {"-h", "--help", "--timeout"}


def test_every_option_is_a_config_trait_with_help():
    traits = SandboxConfig.class_traits(config=True)
    assert set(traits) == set(options.BY_NAME)
    for name, trait in traits.items():
        assert trait.help == options.BY_NAME[name].help


def test_a_trait_without_an_option_or_an_option_without_a_trait_is_refused():
    traits = dict(SandboxConfig.class_traits(config=True))
    extra = {**traits, "gpus": Int(0).tag(config=True)}
    with pytest.raises(TypeError, match=r"without an option \['gpus'\]"):
        options.describe_traits(extra)
    del traits["image"]
    with pytest.raises(TypeError, match=r"options without a config trait \['image'\]"):
        options.describe_traits(traits)


def test_the_config_class_declares_its_traits():
    """Each option's trait is written in SandboxConfig's class statement, where editors and
    type checkers see it (not made at run time from the table)."""
    tree = ast.parse(inspect.getsource(sandbox_config))
    [body] = [node.body for node in tree.body
              if isinstance(node, ast.ClassDef) and node.name == "SandboxConfig"]
    declared = [target.id for node in body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)]
    assert sorted(declared) == sorted(options.BY_NAME)


@pytest.mark.parametrize("argv, expected", [
    (["--shm-size", "1g", "--hostname", "lab"], {"shm_size_mb": 1024, "hostname": "lab"}),
    (["--no-network", "--read-only"], {"network": False, "read_only": True}),
    (["-e", "A=1", "--env", "B=2", "-p", "80", "--port", "90"],
     {"env": {"A": "1", "B": "2"}, "ports": ["80", "90"]}),
    ([], {}),
])
def test_given_keeps_only_what_the_command_line_set(argv, expected):
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    assert options.given(parser.parse_args(argv)) == expected


def test_environment_variables_are_parsed_like_flags():
    assert options.from_env({"AGENTKERNEL_PROFILE": "restrictive", "AGENTKERNEL_IMAGE": "x",
                             "AGENTKERNEL_LABELS": "a=1, b = 2", "AGENTKERNEL_CPUS": "2"}) == {
        "profile": "restrictive", "image": "x", "labels": {"a": "1", "b": "2"}}
    with pytest.raises(ConfigError, match="^invalid AGENTKERNEL_PROFILE 'nope': must be one of"):
        options.from_env({"AGENTKERNEL_PROFILE": "nope"})


def resolved(**values):
    return create_request(SandboxConfig(image="img", name="n", **values).resolve())


def test_shm_size_and_hostname_reach_the_create_request():
    request = resolved(shm_size_mb=256, hostname="lab.example")
    assert request["HostConfig"]["ShmSize"] == 256 * MB
    assert request["Hostname"] == "lab.example"
    plain = resolved()
    assert "ShmSize" not in plain["HostConfig"] and "Hostname" not in plain


def test_profiles_in_the_create_request():
    moderate = resolved()["HostConfig"]
    assert (moderate["Memory"], moderate["CpuQuota"], moderate["PidsLimit"]) == (
        512 * MB, 100_000, 512)
    assert moderate["CapDrop"] == ["ALL"] and moderate["SecurityOpt"] == ["no-new-privileges"]
    assert moderate["NetworkMode"] == "agentkernel-guarded" and moderate["AutoRemove"] is True
    strict = resolved(profile="restrictive")
    host = strict["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=128m"} and "CapAdd" not in host
    assert strict["User"] == "65534:65534" and strict["Env"] == ["HOME=/tmp"]
    loose = resolved(profile="permissive", persistent=True)
    assert "CapDrop" not in loose["HostConfig"] and "Memory" not in loose["HostConfig"]
    assert loose["StdinOnce"] is False and loose["HostConfig"]["AutoRemove"] is False


def test_ports_and_binds_in_the_create_request(tmp_path):
    request = resolved(ports=["8080", "0.0.0.0:9000:90/udp"], volumes=[f"{tmp_path}:/data:ro"])
    assert request["ExposedPorts"] == {"8080/tcp": {}, "90/udp": {}}
    assert request["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "90/udp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}]}
    assert request["HostConfig"]["Binds"] == [f"{tmp_path}:/data:ro"]


def test_the_writable_roots_size_limit_reaches_the_create_request(monkeypatch):
    monkeypatch.delenv("AGENTKERNEL_DISK_MB", raising=False)  # the engine tests set it
    assert resolved()["HostConfig"]["StorageOpt"] == {"size": "10240M"}
    assert resolved(disk_mb=2048)["HostConfig"]["StorageOpt"] == {"size": "2048M"}
    assert "StorageOpt" not in resolved(disk_mb=0)["HostConfig"]
    assert "StorageOpt" not in resolved(profile="restrictive")["HostConfig"], (
        "a read-only root has nothing to fill (its tmpfs is bounded)")
    monkeypatch.setenv("AGENTKERNEL_DISK_MB", "1g")
    assert resolved()["HostConfig"]["StorageOpt"] == {"size": "1024M"}
    monkeypatch.setenv("AGENTKERNEL_DISK_MB", "lots")
    with pytest.raises(ConfigError, match="^invalid AGENTKERNEL_DISK_MB 'lots'"):
        resolved()
    assert "--disk" not in {f for o in options.OPTIONS for f in o.flags}, "no cell may raise it"
