"""Pure logic: spec parsers, path rules, config resolution and profiles (no engine)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentkernel.config import SandboxConfig
from agentkernel.config.specs import (
    PortSpec,
    parse_cpus,
    parse_env_pair,
    parse_memory_mb,
    parse_port,
    parse_volume,
)
from agentkernel.errors import ConfigError, PathRefused, SandboxError
from agentkernel.paths import check_sandbox_path


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("8080", PortSpec(8080)),
        ("9000:80", PortSpec(80, host_port=9000)),
        ("53/udp", PortSpec(53, "udp")),
        ("0.0.0.0:8080:80/tcp", PortSpec(80, "tcp", "0.0.0.0", 8080)),
        ("127.0.0.1::80", PortSpec(80, host_ip="127.0.0.1")),
        ("[::1]:8080:80", PortSpec(80, host_ip="::1", host_port=8080)),
    ],
)
def test_port_specs(spec: str, expected: PortSpec) -> None:
    assert parse_port(spec) == expected


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("notaport", "container_port must be 1-65535"),
        ("70000:80", "host_port must be 1-65535"),
        ("80/sctp", "protocol must be tcp or udp"),
        ("a:b:c:d", "expected"),
        ("host:80:80", "not an IP address"),
        ("0", "container_port"),
        ("", "expected"),
    ],
)
def test_bad_port_specs(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_port(spec)
    assert "\n" not in str(info.value) and "container_port" in str(info.value)


def test_volume_specs() -> None:
    assert parse_volume("data:/data").is_bind is False
    assert parse_volume("/srv:/srv:ro").read_only
    for bad in ("data", "data:rel/path", "bad name!:/x", "/a:/b:rx"):
        with pytest.raises(ConfigError, match="invalid volume spec"):
            parse_volume(bad)


def test_sizes_and_env() -> None:
    assert parse_memory_mb("2g") == 2048 and parse_memory_mb(512) == 512
    assert parse_cpus("0.5") == 0.5
    for bad in ("-1", "0", "two", "nan", "inf"):
        with pytest.raises(ConfigError, match="invalid cpus"):
            parse_cpus(bad)
    for bad in ("-5", "0", "lots", "1t"):
        with pytest.raises(ConfigError, match="invalid memory"):
            parse_memory_mb(bad)
    assert parse_env_pair("A=b=c") == ("A", "b=c")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_env_pair("NOEQUALS")


@pytest.mark.parametrize(
    "path, rule",
    [
        ("relative/file", "must be absolute"),
        ("/tmp/../etc/passwd", "must not contain '..'"),
        ("/proc/self/environ", "/proc is off limits"),
        ("/sys/fs/cgroup", "/sys is off limits"),
        ("//dev/null", "/dev is off limits"),
        ("/", "below '/'"),
        ("", "non-empty"),
        ("/tmp/a\x00b", "NUL"),
    ],
)
def test_path_rules(path: str, rule: str) -> None:
    with pytest.raises(PathRefused, match=rule):
        check_sandbox_path(path)


def test_path_normalised() -> None:
    assert check_sandbox_path("/tmp//a/./b") == "/tmp/a/b"
    assert check_sandbox_path("/procfs/x") == "/procfs/x"


@given(st.text())
def test_path_rules_total(path: str) -> None:
    try:
        assert check_sandbox_path(path).startswith("/")
    except PathRefused:
        pass


@given(st.text(max_size=40))
def test_port_parser_total(spec: str) -> None:
    try:
        parse_port(spec)
    except ConfigError as err:
        assert "\n" not in str(err)


def test_profiles_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTKERNEL_PROFILE", raising=False)
    moderate = SandboxConfig(image="x").resolve()
    assert moderate.profile.name == "moderate"
    assert (moderate.cpus, moderate.memory_mb, moderate.network) == (1.0, 512, True)
    assert moderate.pids_limit and moderate.profile.no_new_privileges
    strict = SandboxConfig(image="x", profile="restrictive").resolve()
    assert (strict.network, strict.read_only, strict.tmpfs) == (False, True, ("/tmp",))
    assert strict.user == "65534:65534" and strict.profile.cap_add == ()
    loose = SandboxConfig(image="x", profile="permissive").resolve()
    assert loose.memory_mb is None and loose.profile.cap_add is None
    explicit = SandboxConfig(image="x", cpus=2, memory_mb=1024, network=False).resolve()
    assert (explicit.cpus, explicit.memory_mb, explicit.network) == (2.0, 1024, False)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"profile": "restrictive", "network": True}, "forbids the network"),
        ({"profile": "restrictive", "mount_cwd": True}, "forbids host mounts"),
        ({"profile": "restrictive", "read_only": False}, "read-only root"),
        ({"network": False, "ports": ["8080"]}, "ports need the network"),
        ({"cpus": -1}, "invalid cpus"),
        ({"memory_mb": 0}, "invalid memory"),
        ({"name": "bad name"}, "invalid sandbox name"),
        ({"volumes": ["/var/run:/x"]}, "engine's socket"),
        ({"volumes": ["/no/such/dir:/x"]}, "no such host folder"),
        ({"workdir": "rel"}, "must be an absolute path"),
    ],
)
def test_config_refusals(options: dict, fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTKERNEL_PROFILE", raising=False)
    if "/var/run" in str(options):
        monkeypatch.setattr("pathlib.Path.exists", lambda self: True)
    with pytest.raises(ConfigError, match=fragment) as info:
        SandboxConfig(image="x", **options).resolve()
    assert "\n" not in str(info.value)


def test_config_sources(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / "agentkernel_config.py").write_text(
        "c.SandboxConfig.image = 'from-file'\nc.SandboxConfig.cpus = 1.5\n"
    )
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("AGENTKERNEL_IMAGE", raising=False)
    monkeypatch.setenv("AGENTKERNEL_LABELS", "team=a,ci=1")
    cfg = SandboxConfig()
    assert (cfg.image, cfg.cpus) == ("from-file", 1.5)
    assert cfg.resolve().labels["team"] == "a"
    monkeypatch.setenv("AGENTKERNEL_IMAGE", "from-env")
    assert SandboxConfig().image == "from-env"
    assert SandboxConfig(image="explicit").image == "explicit"
    monkeypatch.setenv("AGENTKERNEL_PROFILE", "nope")
    with pytest.raises(ConfigError, match="AGENTKERNEL_PROFILE"):
        SandboxConfig()


def test_unknown_option_is_clear() -> None:
    with pytest.raises(ConfigError, match="unknown sandbox option"):
        SandboxConfig(image="x", colour="blue")
    with pytest.raises(SandboxError, match="invalid sandbox option"):
        SandboxConfig(image="x", profile="nope")
