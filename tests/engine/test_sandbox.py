"""The Sandbox API against the real engines (Docker, Podman, and Docker over TLS as a remote
engine), every capability and refusal."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from docker.errors import APIError
from helpers.engines import ENGINES, REMOTE_ENGINES, labelled

from agentkernel.engine import Endpoint, Engine, connect_endpoint
from agentkernel.errors import (
    ConfigError,
    EngineUnavailable,
    ExecTimeout,
    ImageNotAvailable,
    PathRefused,
    ResizeFailed,
    SandboxConflict,
    SandboxError,
    SandboxNotFound,
    SandboxNotRunning,
)
from agentkernel.sandbox import LABEL, Sandbox

pytestmark = pytest.mark.engine
TEST_ENGINES = [*ENGINES, *REMOTE_ENGINES]  # the Sandbox API on the TLS engine too


# -- exec --------------------------------------------------------------------------------------
def test_exec_options(shared_sandbox: Sandbox) -> None:
    result = shared_sandbox.exec("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert shared_sandbox.exec(["pwd"], workdir="/usr").stdout == "/usr\n"
    assert shared_sandbox.exec(["id", "-u"], user="65534").stdout == "65534\n"
    assert shared_sandbox.exec("echo $GREETING", env={"GREETING": "hi"}).stdout == "hi\n"
    assert shared_sandbox.exec(["wc", "-c"], stdin=b"x" * 100_000).stdout.strip() == "100000"


def test_exec_streams_while_running(shared_sandbox: Sandbox) -> None:
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    result = shared_sandbox.exec(
        "echo first; sleep 1; echo second >&2",
        on_stdout=lambda t: seen.append((time.monotonic() - start, t)),
        on_stderr=lambda t: seen.append((time.monotonic() - start, "E:" + t)),
    )
    assert result.ok and result.stdout == ""
    assert [t for _, t in seen] == ["first\n", "E:second\n"]
    assert seen[0][0] < seen[1][0] - 0.5, "first line arrived only at the end"


def test_exec_timeout_kills(shared_sandbox: Sandbox) -> None:
    start = time.monotonic()
    with pytest.raises(ExecTimeout, match="timed out after 1 s and was killed"):
        shared_sandbox.exec("sleep 300 & sleep 301; echo never", timeout=1)
    assert time.monotonic() - start < 10
    left = shared_sandbox.exec("ps -eo args").stdout
    assert "sleep 30" not in left, left


def test_exec_bad_command(shared_sandbox: Sandbox) -> None:
    result = shared_sandbox.exec(["no-such-binary"])
    assert result.exit_code in (126, 127)
    with pytest.raises(ConfigError):
        shared_sandbox.exec([])


# -- files -------------------------------------------------------------------------------------
def test_files_round_trip(shared_sandbox: Sandbox) -> None:
    data = bytes(range(256)) * 4 + b"\x00\x00end"
    shared_sandbox.write_file("/tmp/deep/er/bin.dat", data, mode=0o600)
    assert shared_sandbox.read_file("/tmp/deep/er/bin.dat") == data
    assert shared_sandbox.exec("stat -c %a /tmp/deep/er/bin.dat").stdout == "600\n"
    big = os.urandom(10 * 1024 * 1024)
    shared_sandbox.write_file("/tmp/big.bin", big)
    assert shared_sandbox.read_file("/tmp/big.bin") == big
    shared_sandbox.write_file("/tmp/text.txt", "héllo")
    assert shared_sandbox.read_file("/tmp/text.txt").decode() == "héllo"
    shared_sandbox.mkdir("/tmp/made/here")
    assert shared_sandbox.exists("/tmp/made/here")
    shared_sandbox.remove_file("/tmp/text.txt")
    with pytest.raises(SandboxNotFound, match="No such file"):
        shared_sandbox.read_file("/tmp/text.txt")
    shared_sandbox.remove_file("/tmp/made", recursive=True)
    assert not shared_sandbox.exists("/tmp/made")


def test_upload_download_folders(shared_sandbox: Sandbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.bin").write_bytes(b"\x00B")
    shared_sandbox.upload(src, "/tmp/up/tree")
    assert shared_sandbox.read_file("/tmp/up/tree/sub/b.bin") == b"\x00B"
    shared_sandbox.exec("ln -s /etc/passwd /tmp/up/tree/escape")
    back = shared_sandbox.download("/tmp/up/tree", tmp_path / "back")
    assert (back / "a.txt").read_text() == "A"
    assert (back / "sub" / "b.bin").read_bytes() == b"\x00B"
    assert not (back / "escape").exists(), "a symlink from the sandbox must not be recreated"
    single = shared_sandbox.download("/tmp/up/tree/a.txt", tmp_path / "one.txt")
    assert single.read_text() == "A"
    with pytest.raises(SandboxNotFound, match="No such file"):
        shared_sandbox.download("/tmp/nothing-here", tmp_path / "x")
    with pytest.raises(SandboxNotFound, match="No such file on the host"):
        shared_sandbox.upload(tmp_path / "missing", "/tmp/x")


@pytest.mark.parametrize("path", ["relative.txt", "/tmp/../etc/shadow", "/proc/1/environ",
                                  "/sys/kernel/x", "/dev/sda"])
def test_path_rules_enforced(shared_sandbox: Sandbox, path: str) -> None:
    for call in (
        lambda: shared_sandbox.write_file(path, b"x"),
        lambda: shared_sandbox.read_file(path),
        lambda: shared_sandbox.remove_file(path),
        lambda: shared_sandbox.mkdir(path),
    ):
        with pytest.raises(PathRefused, match="refused"):
            call()


# -- resources ---------------------------------------------------------------------------------
def test_resize_verified_in_cgroup(sandbox: Sandbox) -> None:
    assert sandbox.cgroup_limits() == (1.0, 512)
    sandbox.resize(2, 1024)
    assert sandbox.cgroup_limits() == (2.0, 1024)
    sandbox.resize(0.5, "300m")
    assert sandbox.cgroup_limits() == (0.5, 300)
    status = sandbox.status()
    assert (status.cpus, status.memory_mb) == (0.5, 300)


def test_resize_refusals(sandbox: Sandbox, engine: Engine) -> None:
    with pytest.raises(ConfigError, match="invalid cpus"):
        sandbox.resize(-1, 512)
    with pytest.raises(ConfigError, match="invalid memory"):
        sandbox.resize(1, 0)
    with pytest.raises(ConfigError, match=f"has {engine.ncpu} CPUs"):
        sandbox.resize(4096, 512)
    assert sandbox.cgroup_limits() == (1.0, 512)


def test_resize_reports_engine_refusal(sandbox: Sandbox) -> None:
    sandbox.exec("python3 -c 'import time; b = bytearray(150 * 1024 * 1024); time.sleep(60)' &")
    time.sleep(2)
    with pytest.raises(ResizeFailed, match="^live resize not possible: ") as refused:
        sandbox.resize(1, 20)
    assert "\n" not in str(refused.value)
    assert sandbox.cgroup_limits()[1] == 512


# -- isolation and mounts ----------------------------------------------------------------------
def interfaces(sandbox: Sandbox) -> list[str]:
    lines = sandbox.exec("cat /proc/net/dev").stdout.splitlines()
    return sorted(line.split(":")[0].strip() for line in lines[2:])


def test_network_off_has_only_loopback(engine: Engine, test_image: str) -> None:
    with Sandbox(image=test_image, network=False, engine=engine) as sb:
        assert interfaces(sb) == ["lo"]
        assert sb.ip is None
    with Sandbox(image=test_image, engine=engine) as sb:
        assert len(interfaces(sb)) > 1


def test_ports_published_on_loopback(engine: Engine, test_image: str) -> None:
    with Sandbox(image=test_image, ports=["8000", "127.0.0.1::9000/udp"], engine=engine) as sb:
        mappings = {(m.container_port, m.protocol): m for m in sb.ports}
        assert set(mappings) == {(8000, "tcp"), (9000, "udp")}
        http = mappings[(8000, "tcp")]
        assert http.host_ip == "127.0.0.1" and http.host_port > 0
        sb.write_file("/srv/www/index.html", b"hello from the sandbox")
        sb.exec("cd /srv/www && nohup python3 -m http.server 8000 >/dev/null 2>&1 &")
        body = _fetch(f"http://127.0.0.1:{http.host_port}/index.html")
        assert body == b"hello from the sandbox"


def _fetch(url: str, attempts: int = 50) -> bytes:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered at {url}")


def test_read_only_root(engine: Engine, test_image: str) -> None:
    with Sandbox(image=test_image, read_only=True, engine=engine) as sb:
        assert "Read-only file system" in sb.exec("touch /etc/x").stderr
        assert sb.exec("touch /tmp/x && echo ok").stdout == "ok\n"


def test_shm_size_and_hostname_inside(engine: Engine, test_image: str) -> None:
    with Sandbox(image=test_image, shm_size_mb=96, hostname="lab-1", engine=engine) as sb:
        assert sb.exec("hostname").stdout == "lab-1\n"
        size_kb = sb.exec("df -k /dev/shm | tail -n 1").stdout.split()[1]
        assert int(size_kb) == 96 * 1024
    with Sandbox(image=test_image, engine=engine) as sb:  # the engine's defaults otherwise
        assert sb.exec("hostname").stdout.strip() == sb.container_id[:12]


def test_volumes_and_mounts(engine: Engine, test_image: str, tmp_path: Path) -> None:
    volume = f"agentkernel-test-{os.getpid()}"
    host = tmp_path / "host"
    host.mkdir()
    (host / "in.txt").write_text("from host")
    if engine.remote:
        _host_mounts_refused(engine, test_image, tmp_path, volume)
        return
    try:
        with Sandbox(image=test_image, volumes=[f"{volume}:/data", f"{host}:/hostdir:ro"],
                     mount_cwd=True, work_dir=str(tmp_path), engine=engine) as sb:
            sb.exec("echo kept > /data/v.txt")
            assert sb.exec("cat /hostdir/in.txt").stdout == "from host"
            assert "Read-only" in sb.exec("touch /hostdir/y").stderr
            assert sb.exec("pwd").stdout == "/workspace\n"
            sb.exec("echo out > /workspace/made.txt")
        assert (tmp_path / "made.txt").read_text() == "out\n"
        with Sandbox(image=test_image, volumes=[f"{volume}:/data"], engine=engine) as sb:
            assert sb.exec("cat /data/v.txt").stdout == "kept\n"
    finally:
        engine.api.remove_volume(volume, force=True)


def _host_mounts_refused(engine: Engine, test_image: str, tmp_path: Path, volume: str) -> None:
    """On a remote engine a host folder names the engine host's files: refused in one line
    before anything is created; named volumes work as on a local engine."""
    before = {c.id for c in engine.list_containers([LABEL], all=True)}
    for options in ({"volumes": [f"{tmp_path}:/hostdir:ro"]},
                    {"mount_cwd": True, "work_dir": str(tmp_path)}):
        with pytest.raises(ConfigError, match=f"cannot mount host folder {tmp_path}") as info:
            Sandbox(image=test_image, engine=engine, **options).start()
        assert "is remote" in str(info.value) and "upload" in str(info.value)
        assert "\n" not in str(info.value)
    assert {c.id for c in engine.list_containers([LABEL], all=True)} == before
    try:
        with Sandbox(image=test_image, volumes=[f"{volume}:/data"], engine=engine) as sb:
            sb.exec("echo kept > /data/v.txt")
        with Sandbox(image=test_image, volumes=[f"{volume}:/data"], engine=engine) as sb:
            assert sb.exec("cat /data/v.txt").stdout == "kept\n"
    finally:
        engine.api.remove_volume(volume, force=True)


def test_home_mount_is_read_only(engine: Engine, test_image: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "note").write_text("mine")
    if engine.remote:
        with pytest.raises(ConfigError, match="is remote"):
            Sandbox(image=test_image, mount_home=True, profile="permissive", engine=engine,
                    unsafe_host_paths=True).start()
        return
    with pytest.raises(ConfigError, match="in a sandbox refused"):  # $HOME is never mounted
        Sandbox(image=test_image, mount_home=True, profile="permissive", engine=engine)
    # unless the operator says so (unsafe_host_paths), and then read-only
    with Sandbox(image=test_image, mount_home=True, profile="permissive", engine=engine,
                 unsafe_host_paths=True) as sb:
        assert sb.exec("cat /home/user/note").stdout == "mine"
        assert "Read-only" in sb.exec("touch /home/user/x").stderr


def _status_field(sb: Sandbox, field: str) -> str:
    for line in sb.exec("cat /proc/self/status").stdout.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(field)


def test_profiles_inside(engine: Engine, test_image: str) -> None:
    with Sandbox(image=test_image, profile="restrictive", engine=engine) as sb:
        assert _status_field(sb, "CapEff") == "0000000000000000"
        assert _status_field(sb, "NoNewPrivs") == "1"
        assert interfaces(sb) == ["lo"]
        assert sb.exec("id -u").stdout == "65534\n"
        assert "Read-only" in sb.exec("touch /x").stderr
        assert "tmpfs" in sb.exec("grep ' /tmp ' /proc/mounts").stdout
        sb.write_file("/tmp/owned.txt", b"mine")
        assert sb.exec("echo more >> /tmp/owned.txt && stat -c %u /tmp/owned.txt").stdout == (
            "65534\n")
        assert sb.cgroup_limits() == (0.5, 256)
    with Sandbox(image=test_image, engine=engine) as sb:
        caps = int(_status_field(sb, "CapEff"), 16)
        assert caps and caps & (1 << 21) == 0, "CAP_SYS_ADMIN must be dropped"
        assert _status_field(sb, "NoNewPrivs") == "1"
        assert engine.api.inspect_container(sb.container_id)["HostConfig"]["PidsLimit"] == 512
    with Sandbox(image=test_image, profile="permissive", engine=engine) as sb:
        assert sb.cgroup_limits() == (None, None)


# -- identity, reconnect, one-shot -------------------------------------------------------------
def test_labels_and_unique_names(engine: Engine, test_image: str) -> None:
    with Sandbox(image=test_image, engine=engine) as a, Sandbox(image=test_image,
                                                               engine=engine) as b:
        assert a.name != b.name
        attrs = engine.api.inspect_container(a.container_id)
        assert attrs["Config"]["Labels"][LABEL] == a.name
        assert a.is_running and {s.name for s in Sandbox.list(engine=engine)} >= {a.name, b.name}
    assert not a.is_running and labelled(engine, a.name) == []


def test_same_name_refused(engine: Engine, test_image: str) -> None:
    name = f"dup-{os.getpid()}"
    with Sandbox(image=test_image, name=name, engine=engine) as first:
        with pytest.raises(SandboxConflict, match=r"already exists \(running\): connect"):
            Sandbox(image=test_image, name=name, engine=engine).start()
        assert first.is_running and first.exec("true").ok


def test_persistent_reconnect(engine: Engine, test_image: str) -> None:
    name = f"keep-{os.getpid()}"
    sb = Sandbox(image=test_image, name=name, persistent=True, engine=engine).start()
    try:
        sb.write_file("/root/state.txt", b"still here")
        joined = ["eth0", "lo"] if sb.effective.network else ["lo"]
        assert sorted(sb.exec("ls /sys/class/net").stdout.split()) == joined
        sb.stop()
        assert labelled(engine, name), "a persistent sandbox survives stop()"
        again = Sandbox.connect(name, engine=engine)
        assert again.is_running and again.effective.persistent
        assert again.read_file("/root/state.txt") == b"still here"
        assert again.cgroup_limits() == (1.0, 512)
        assert sorted(again.exec("ls /sys/class/net").stdout.split()) == joined, "its network"
    finally:
        sb.remove()
    assert labelled(engine, name) == []
    with pytest.raises(SandboxNotFound, match="no sandbox named"):
        Sandbox.connect(name, engine=engine)


def test_one_shot_run_leaves_nothing(engine: Engine, test_image: str) -> None:
    before = len(engine.api.containers(all=True, filters={"label": LABEL}))
    result = Sandbox.run(test_image, ["python3", "-c", "print(6 * 7)"], engine=engine)
    assert (result.exit_code, result.stdout) == (0, "42\n")
    failing = Sandbox.run(test_image, "exit 5", engine=engine, network=False)
    assert failing.exit_code == 5
    assert len(engine.api.containers(all=True, filters={"label": LABEL})) == before


def test_container_killed_under_us(sandbox: Sandbox, engine: Engine) -> None:
    engine.api.kill(sandbox.container_id)
    with pytest.raises(SandboxNotRunning, match="sandbox .* (not running|is gone)"):
        for _ in range(20):
            sandbox.exec("true")
            time.sleep(0.2)
    assert not sandbox.is_running


# -- bad input ---------------------------------------------------------------------------------
def test_missing_image_named(engine: Engine) -> None:
    with pytest.raises(ImageNotAvailable,
                       match="'agentkernel-no-such-image:1' is not available locally or from its"):
        Sandbox(image="agentkernel-no-such-image:1", engine=engine).start()


def test_pull_progress_reported(engine: Engine) -> None:
    events: list[dict] = []
    with pytest.raises(ImageNotAvailable):
        Sandbox(image="127.0.0.1:1/none/such:tag", engine=engine).start(progress=events.append)
    assert all(isinstance(e, dict) for e in events)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"ports": ["notaport"]}, "invalid port spec 'notaport'"),
        ({"ports": ["70000:80"]}, "host_port must be 1-65535"),
        ({"cpus": -2}, "invalid cpus"),
        ({"memory_mb": 0}, "invalid memory"),
        ({"cpus": 4096}, "CPUs"),
        ({"memory_mb": 2**30}, "the engine's host has"),  # refused once started: removed
    ],
)
def test_bad_config_leaves_nothing(engine: Engine, test_image: str, options: dict,
                                   fragment: str) -> None:
    before = len(engine.api.containers(all=True, filters={"label": LABEL}))
    with pytest.raises(ConfigError, match=fragment) as info:
        Sandbox(image=test_image, engine=engine, **options).start()
    assert "\n" not in str(info.value)
    assert len(engine.api.containers(all=True, filters={"label": LABEL})) == before


class _SocketProxy:
    """A proxy in front of the real engine (its unix socket, or its TLS port, the TLS passing
    through untouched), which a test can cut."""

    def __init__(self, engine: Engine, path: Path):
        endpoint = engine.endpoint()
        self.path = path
        if endpoint.remote:
            host, _, port = endpoint.url.split("://", 1)[1].rpartition(":")
            self.family, self.target = socket.AF_INET, (host, int(port))
            self.server = socket.socket(socket.AF_INET)
            self.server.bind(("127.0.0.1", 0))
            self.endpoint = Endpoint(f"tcp://127.0.0.1:{self.server.getsockname()[1]}",
                                     endpoint.tls)
        else:
            self.family, self.target = socket.AF_UNIX, endpoint.url.removeprefix("unix://")
            self.server = socket.socket(socket.AF_UNIX)
            self.server.bind(str(path))
            self.endpoint = Endpoint(f"unix://{path}")
        self.server.listen(16)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(self.family)
            upstream.connect(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept() (a TCP port stays open else)
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.path.unlink(missing_ok=True)


def test_engine_stopped_midway(engine: Engine, test_image: str, tmp_path: Path) -> None:
    proxy = _SocketProxy(engine, tmp_path / "engine.sock")
    proxied = connect_endpoint(engine.kind, proxy.endpoint)
    sb = Sandbox(image=test_image, engine=proxied).start()
    container = sb.container_id
    try:
        proxy.cut()
        with pytest.raises(EngineUnavailable, match="stopped answering") as info:
            sb.exec("true")
        assert "\n" not in str(info.value)
        with pytest.raises(SandboxError):
            sb.write_file("/tmp/x", b"x")
        sb.stop()  # must not raise or hang
    finally:
        with contextlib.suppress(APIError):  # the cut lifeline may already have removed it
            engine.api.remove_container(container, force=True)


def test_no_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agentkernel.engine import connect

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(EngineUnavailable, match="no container engine answered: tried") as info:
        connect("docker")
    assert "dockerd" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("AGENTKERNEL_ENGINE", "kubernetes")
    with pytest.raises(ConfigError, match="choose from auto, docker, podman"):
        connect()


def test_readme_api_example(engine: Engine, test_image: str) -> None:
    """The README's Python API example, as written there (with the test image)."""
    from agentkernel import ExecResult, PortMapping, Sandbox, SandboxConfig, SandboxError

    assert issubclass(SandboxConfig, object) and issubclass(SandboxError, Exception)
    with Sandbox(image=test_image, cpus=1, memory_mb=512, ports=["8000"], engine=engine) as sb:
        assert sb.exec("python3 -c 'print(6 * 7)'").stdout == "42\n"
        sb.write_file("/work/data.bin", b"\x00\x01")
        assert sb.read_file("/work/data.bin") == b"\x00\x01"
        sb.resize(2, 1024)  # verified in the cgroup, ResizeFailed otherwise
        assert isinstance(sb.ports[0], PortMapping) and sb.status().running
    result = Sandbox.run(test_image, ["python3", "-V"], engine=engine)
    assert isinstance(result, ExecResult) and result.stdout.startswith("Python 3")
