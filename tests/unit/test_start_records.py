"""What a start remembers for the next process: an image's Python version (for kernel_info)
and the path of Podman's default seccomp profile. Each is read back only when well formed, and
a cache that cannot be written only costs the wait it saves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agentkernel.cache import write_atomically
from agentkernel.engine import podman, service
from agentkernel.sandbox import image_python

IMAGE = "sha256:" + "ab" * 32


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "agentkernel"


def test_an_image_python_version_is_recalled(cache: Path) -> None:
    assert image_python.recall(IMAGE) is None
    image_python.remember(IMAGE, "3.11.2")
    assert image_python.recall(IMAGE) == "3.11.2"
    assert image_python.recall("ab" * 32) == "3.11.2", "podman gives ids without sha256:"
    image_python.remember(IMAGE, "3.12.0")
    assert image_python.recall(IMAGE) == "3.12.0"
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("version", ["3.11", "3.11.2\n<script>", "", None, 3.11, "1234.1.1"])
def test_what_is_not_a_version_is_not_remembered(cache: Path, version: object) -> None:
    image_python.remember(IMAGE, version)
    assert image_python.recall(IMAGE) is None


@pytest.mark.parametrize("image_id", ["agentkernel-test:latest", "sha256:../../etc/passwd",
                                      "sha256:" + "ab" * 31, "", "../" + "ab" * 32])
def test_only_image_ids_name_a_record(cache: Path, image_id: str) -> None:
    image_python.remember(image_id, "3.11.2")
    assert image_python.recall(image_id) is None
    assert not cache.exists() or not list(cache.iterdir())


def test_a_record_that_is_not_a_version_is_ignored(cache: Path) -> None:
    image_python.remember(IMAGE, "3.11.2")
    (record,) = cache.glob(f"{image_python.PREFIX}*")
    record.write_text("3.11.2; rm -rf /")
    assert image_python.recall(IMAGE) is None
    record.write_bytes(b"\xff\xfe")
    assert image_python.recall(IMAGE) is None


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(cache: Path) -> None:
    image_python.remember(IMAGE, "3.11.2")
    (record,) = cache.glob(f"{image_python.PREFIX}*")
    with pytest.raises(OSError):
        write_atomically(cache / "missing-folder" / "x", "text")
    write_atomically(record, "3.12.1")
    assert image_python.recall(IMAGE) == "3.12.1"
    assert sorted(p.name for p in cache.iterdir()) == [record.name]


def test_an_unusable_cache_folder_is_no_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache's place (and the fallback's) is a file, not a folder."""
    (tmp_path / "agentkernel").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "agentkernel"))
    image_python.remember(IMAGE, "3.11.2")
    assert image_python.recall(IMAGE) is None


def _host_with(source: str) -> dict:
    return {"cpus": 2, "memTotal": 1 << 30, "security": {"seccompProfilePath": source}}


def test_podman_profile_source_is_recorded_per_endpoint(cache: Path) -> None:
    """The profile's path is kept whichever Podman process gave it, even one that cannot be
    told (a start checks the path against /info)."""
    here, there = "unix:///run/podman/podman.sock", "unix:///run/user/1000/podman/podman.sock"
    assert podman.recorded_source(here) is None
    podman.record_host(here, None, _host_with("/usr/share/containers/seccomp.json"))
    assert podman.recorded_source(here) == "/usr/share/containers/seccomp.json"
    assert podman.recorded_source(there) is None


@pytest.mark.parametrize("source", ["relative/seccomp.json", "/a\n/b", "/a\x00b", ""])
def test_a_podman_record_that_is_not_an_absolute_path_is_ignored(cache: Path,
                                                                 source: str) -> None:
    url = "unix:///run/podman/podman.sock"
    podman.record_host(url, "boot/1/2", _host_with(source))
    assert podman.recorded_source(url) is None
    assert podman.recorded_host(url, "boot/1/2") is None


HOST = {"cpus": 2, "memTotal": 24 << 30, "security": {"seccompProfilePath": "/usr/share/x.json"},
        "hostname": "not kept"}


def test_the_process_serving_a_socket_is_told_by_pid_and_start_time(tmp_path: Path) -> None:
    path = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        started = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert service.service_identity(f"unix://{path}") == f"{boot}/{os.getpid()}/{started}"
    assert service.service_identity(f"unix://{path}") is None, "nobody listens any more"
    assert service.service_identity("tcp://127.0.0.1:2375") is None


def test_a_socket_manager_is_no_service_identity(tmp_path: Path) -> None:
    """Behind systemd's socket activation the listener is systemd, which stays while the
    engine restarts: such a socket has no identity, and nothing recorded is taken for it."""
    path = tmp_path / "engine.sock"
    code = ("import socket, sys, time\n"
            "open('/proc/self/comm', 'w').write('systemd')\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n"
            "print('ready', flush=True); time.sleep(30)\n")
    with subprocess.Popen([sys.executable, "-c", code, str(path)],
                          stdout=subprocess.PIPE, text=True) as listener:
        try:
            assert listener.stdout.readline() == "ready\n"
            assert service.peer_credentials(f"unix://{path}")[0] == listener.pid
            assert service.service_identity(f"unix://{path}") is None
        finally:
            listener.kill()


def test_a_record_serves_only_the_service_that_answered(cache: Path) -> None:
    url = "unix:///var/run/docker.sock"
    assert service.recorded("storage-quota", url, "boot/1/2") == (False, None)
    service.record("storage-quota", url, "boot/1/2", None)
    assert service.recorded("storage-quota", url, "boot/1/2") == (True, None)
    assert service.recorded("storage-quota", url, "boot/1/3") == (False, None)
    assert service.recorded("storage-quota", url, None) == (False, None)
    service.record("storage-quota", url, "boot/1/3", "xfs with pquota needed")
    assert service.recorded("storage-quota", url, "boot/1/3") == (True, "xfs with pquota needed")
    assert service.recorded("podman-host", url, "boot/1/3") == (False, None), "another topic"


def test_a_host_record_serves_only_the_same_service_process(cache: Path) -> None:
    url = "unix:///run/podman/podman.sock"
    podman.record_host(url, "boot/100/5000", HOST)
    kept = {key: HOST[key] for key in ("cpus", "memTotal", "security")}
    assert podman.recorded_host(url, "boot/100/5000") == kept
    assert podman.recorded_host(url, "boot/100/5001") is None, "the service was restarted"
    assert podman.recorded_host(url, None) is None, "a service that cannot be told"
    assert podman.recorded_host("unix:///run/user/1000/podman/podman.sock",
                                "boot/100/5000") is None


@pytest.mark.parametrize("text", [
    "{", "[]", '{"service": "boot/100/5000"}',
    '{"service": "boot/100/5000", "value": {"cpus": "2", "memTotal": 1, '
    '"security": {"seccompProfilePath": "/x"}}}',
    '{"service": "boot/100/5000", "value": {"cpus": 2, "memTotal": 1, "security": {}}}',
    '{"service": 5000, "value": {"cpus": 2, "memTotal": 1, '
    '"security": {"seccompProfilePath": "/x"}}}',
    '{"service": "boot/100/5000", "value": {"cpus": 2, "memTotal": 1, '
    '"security": {"seccompProfilePath": "x"}}}',
])
def test_a_host_record_that_is_not_well_formed_is_ignored(cache: Path, text: str) -> None:
    url = "unix:///run/podman/podman.sock"
    podman.record_host(url, "boot/100/5000", HOST)
    (record,) = cache.glob("podman-host-*")
    record.write_text(text)
    assert podman.recorded_host(url, "boot/100/5000") is None


def test_an_answer_without_what_a_start_needs_is_not_recorded(cache: Path) -> None:
    podman.record_host("unix:///run/podman/podman.sock", "boot/1/2", {"cpus": 2})
    assert not list(cache.glob("podman-host-*"))
