"""`agentkernel runtime setup`: the gVisor launcher it writes and the engine configuration it
merges (agentkernel/runtimes.py). The launcher is run for real, with a stand-in for runsc that
prints its arguments."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from agentkernel.engine.podman import others_may_use, runtime_launcher, userns_mode
from agentkernel.errors import ConfigError
from agentkernel.runtimes import docker_config, launcher_script, register_podman

# what Docker and Podman write in a bundle's config.json (Go's compact JSON)
WITH_PATH = {"linux": {"namespaces": [{"type": "pid"},
                                      {"type": "network", "path": "/run/netns/cni-1234"}]}}
WITHOUT_PATH = {"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}}


def launch(tmp_path: Path, network: str, args: list[str], spec: dict | None = None) -> list[str]:
    """Run the launcher for ``network`` with ``args``; the arguments runsc would get."""
    runsc = tmp_path / "fake-runsc"
    runsc.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    runsc.chmod(0o755)
    launcher = tmp_path / "launcher"
    launcher.write_text(launcher_script("runsc", str(runsc), network))
    launcher.chmod(0o755)
    if spec is not None:
        (tmp_path / "bundle").mkdir(exist_ok=True)
        (tmp_path / "bundle" / "config.json").write_text(json.dumps(spec, separators=(",", ":")))
    done = subprocess.run([str(launcher), *args], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


@pytest.mark.parametrize("network", ["host", "sandbox"])
def test_a_container_without_a_namespace_path_gets_no_network(tmp_path: Path,
                                                              network: str) -> None:
    """Podman's "none" gives the runtime no namespace to join: gVisor's host mode would then
    be the host's own network, so the launcher gives gVisor's loopback-only stack."""
    bundle = str(tmp_path / "bundle")
    for args in (["--root", "/r", "create", "--bundle", bundle, "id"],
                 ["create", f"--bundle={bundle}", "id"], ["create", "-bundle", bundle, "id"]):
        argv = launch(tmp_path, network, args, WITHOUT_PATH)
        assert argv[:2] == ["--platform=ptrace", "--network=none"] and argv[2:] == args


def test_a_container_with_its_own_namespace_gets_the_mode_chosen(tmp_path: Path) -> None:
    bundle = str(tmp_path / "bundle")
    argv = launch(tmp_path, "host", ["create", "--bundle", bundle, "id"], WITH_PATH)
    assert argv[:2] == ["--platform=ptrace", "--network=host"]
    argv = launch(tmp_path, "sandbox", ["create", "--bundle", bundle, "id"], WITH_PATH)
    assert argv[1] == "--network=sandbox"
    # a bundle whose spec cannot be read is treated as having no namespace: never host
    (tmp_path / "bundle" / "config.json").write_text("")
    assert launch(tmp_path, "host", ["create", "--bundle", bundle, "x"])[1] == "--network=none"
    assert launch(tmp_path, "host", ["state", "x"]) == [
        "--platform=ptrace", "--network=host", "state", "x"]


def test_only_known_network_modes() -> None:
    with pytest.raises(ConfigError, match="must be one of sandbox, host"):
        launcher_script("runsc", "/usr/bin/runsc", "none; rm -rf /")


def test_docker_config_keeps_what_is_there() -> None:
    current = json.dumps({"log-level": "warn", "runtimes": {"kata": {"path": "/k"}}})
    merged = json.loads(docker_config(current, "runsc", Path("/l/runsc")))
    assert merged == {"log-level": "warn",
                      "runtimes": {"kata": {"path": "/k"}, "runsc": {"path": "/l/runsc"}}}
    assert json.loads(docker_config("", "runsc", Path("/l"))) == {
        "runtimes": {"runsc": {"path": "/l"}}}
    for broken in ("{not json", "[1]"):
        with pytest.raises(ConfigError, match="daemon.json"):
            docker_config(broken, "runsc", Path("/l"))


def test_podman_names_the_launcher(tmp_path: Path) -> None:
    register_podman("runsc", Path("/l/runsc"), tmp_path)
    text = (tmp_path / "agentkernel-runsc.conf").read_text()
    assert '[engine.runtimes]\nrunsc = ["/l/runsc"]\n' in text
    launchers = tmp_path / "launchers"
    launchers.mkdir()
    assert runtime_launcher("runsc", launchers) == "runsc"
    (launchers / "runsc").write_text("#!/bin/sh\n")
    (launchers / "runsc").chmod(0o755)
    assert runtime_launcher("runsc", launchers) == str(launchers / "runsc")
    assert runtime_launcher("/opt/x", launchers) == "/opt/x"


def test_userns_needs_enough_ids_for_containers_in_both_files(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\ncontainers:2147483647:2147483648\n")
    subgid.write_text("alice:100000:65536\n")
    assert userns_mode((subuid, subgid)) is None
    subgid.write_text("containers:300000:1000\ncontainers:400000:65536\n")
    assert userns_mode((subuid, subgid)) == (
        "auto:uidmapping=0:2147483647:65536,gidmapping=0:400000:65536")
    assert userns_mode((subuid, tmp_path / "missing")) is None


def test_others_may_use_needs_every_folder_above_searchable() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as top:  # pytest's own folders are 0700
        check_folders(Path(top))


def check_folders(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    inner = closed / "inner"
    inner.mkdir(parents=True)
    tmp_path.chmod(0o755)
    inner.chmod(0o777)
    closed.chmod(0o700)
    assert not others_may_use(str(inner))
    closed.chmod(0o711)
    assert others_may_use(str(inner), write=True)
    inner.chmod(0o755)
    assert others_may_use(str(inner)) and not others_may_use(str(inner), write=True)
    inner.chmod(0o750)
    assert not others_may_use(str(inner))
    assert not others_may_use(str(tmp_path / "missing"))


@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true",
                    reason="giving a folder to other ids needs root")
def test_what_the_namespaces_ids_own_is_its_roots() -> None:
    """A folder owned by the user namespace's ids (the overlay of a shifted workspace, in a
    folder of its own) is its root's whatever its mode; one owned by ids outside its range
    (or only its group inside) is "others"."""
    shift = (2_000_000, 3_000_000, 65536)
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        Path(top).chmod(0o711)
        own = Path(top) / "own"
        inner = own / "root"
        inner.mkdir(parents=True, mode=0o700)
        own.chmod(0o700)
        os.chown(own, shift[0], shift[1])
        os.chown(inner, shift[0] + 5, shift[1])
        assert others_may_use(str(inner), write=True, shift=shift)
        assert not others_may_use(str(inner), write=True)
        os.chown(own, shift[0] + shift[2], shift[1])  # just past the range
        assert not others_may_use(str(inner), shift=shift)
        os.chown(own, 0, shift[1])
        assert not others_may_use(str(inner), shift=shift)
