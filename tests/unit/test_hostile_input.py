"""Hostile input, without an engine: runner output, sandbox paths, archives and mount options.

What a hostile cell could feed the host side: bytes and frames written to the runner's protocol
stream, paths given to the file API, archives coming out of a sandbox, and mount specs. The
same attacks through the real kernel are in tests/engine/test_security.py. See SECURITY.md.
"""

from __future__ import annotations

import io
import posixpath
import socket
import struct
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest
from helpers.files import tree
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkernel import hostfiles
from agentkernel.commands import parse_line_magic
from agentkernel.config import SandboxConfig
from agentkernel.errors import ConfigError, PathRefused, RunnerGone
from agentkernel.paths import FORBIDDEN_ROOTS, check_sandbox_path
from agentkernel.runner.protocol import check_frame, encode_frame
from agentkernel.runner_client import RunnerSession, connection


# == engine-agnostic: hostile runner output, paths, archives, options ============================
class HostileRunner:
    """A runner transport that answers the first request with ``chunks`` and hangs up.

    Not a mock of the engine: hostile runner output, as user code in the runner's process
    could write to the protocol's file descriptor.
    """

    def __init__(self, chunks: list[bytes]):
        self._chunks = [chunk for chunk in chunks if chunk]
        self._asked = threading.Event()

    def write(self, data: bytes) -> None:
        self._asked.set()

    def read(self) -> bytes:
        self._asked.wait(10)
        return self._chunks.pop(0) if self._chunks else b""

    def close(self) -> None:
        self._asked.set()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6,
)
hostile_frames = st.builds(
    lambda kind, rid, fields: encode_frame({**fields, "type": kind, "id": rid}),
    st.sampled_from(["stream", "display", "result", "error", "input_request", "done", "ready",
                     "log", "clear_output", "unheard-of"]),
    st.sampled_from(["1", "2", None, 1, [], ""]),
    st.dictionaries(st.sampled_from(["name", "text", "data", "status", "traceback", "prompt",
                                     "ename", "evalue", "metadata", "transient", "level"]),
                    json_values | st.sampled_from(["stdout", "stderr", "ok"]), max_size=6),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), hostile_frames), max_size=8))
def test_hostile_runner_output_ends_in_runner_gone(chunks: list[bytes]) -> None:
    session = RunnerSession(HostileRunner(chunks))
    try:
        for attempt in range(3):  # ids "1" and "2" may be answered; the third cannot be
            try:
                session.execute(f"cell {attempt}", on_event=check_frame, timeout=10)
            except RunnerGone:
                break
        else:
            pytest.fail("a runner that hung up must end in RunnerGone")
    finally:
        session.close()


class TricklingRunner:
    """A runner on a real socket that answers a request with a frame header promising 1 MB,
    then one byte every 0.2 s: what a cell's thread writing to the protocol's fd can do."""

    def __init__(self) -> None:
        self._host, self._runner = socket.socketpair()
        self._asked = threading.Event()
        self._closed = threading.Event()
        threading.Thread(target=self._trickle, daemon=True).start()

    def _trickle(self) -> None:
        self._asked.wait()
        self._runner.sendall(struct.pack(">I", 1_000_000))
        while not self._closed.wait(0.2):
            self._runner.sendall(b" ")

    def write(self, data: bytes) -> None:
        self._asked.set()

    def read(self) -> bytes:
        return self._host.recv(65536)

    def set_timeout(self, seconds: float | None) -> None:
        self._host.settimeout(seconds)

    def close(self) -> None:
        self._closed.set()
        self._asked.set()


def test_a_frame_that_trickles_ends_in_runner_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "FRAME_STALL_S", 1.0)
    session = RunnerSession(TricklingRunner())
    try:
        with pytest.raises(RunnerGone, match="cut off"):
            session.execute("cell", on_event=check_frame, timeout=20)
    finally:
        session.close()


path_segments = st.sampled_from(["", ".", "..", "...", "proc", "sys", "dev", "etc", "tmp", "~",
                                 "a b", "\x00", "proc..", "\n"])
sandbox_paths = st.one_of(
    st.text(max_size=30),
    st.lists(path_segments, max_size=6).map("/".join),
    st.lists(path_segments, max_size=6).map(lambda parts: "/" + "/".join(parts)),
)


@given(sandbox_paths)
def test_sandbox_paths_are_refused_or_confined(path: str) -> None:
    try:
        normal = check_sandbox_path(path)
    except PathRefused as err:
        assert "\n" not in str(err)
        return
    assert normal.startswith("/") and normal != "/" and posixpath.normpath(normal) == normal
    assert ".." not in normal.split("/") and "\x00" not in normal
    assert not any(normal == root or normal.startswith(root + "/") for root in FORBIDDEN_ROOTS)


member_names = st.lists(st.sampled_from(["..", "a", "link", "sub", "/", "", "etc", "."]),
                        min_size=1, max_size=4).map("/".join).filter(lambda n: n.strip("/."))
members = st.tuples(
    st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "chardev"]),
    member_names,
    st.sampled_from(["/etc", "/etc/passwd", "../../..", "a", "link/../.."]),
)


def hostile_archive(specs: list[tuple[str, str, str]]) -> bytes:
    """A tar of the given (kind, name, link target) members, as a sandbox could produce."""
    buf = io.BytesIO()
    kinds = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
             "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, target in specs:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = 5
                tar.addfile(info, io.BytesIO(b"sandy"))
                continue
            info.type, info.linkname = kinds[kind], target
            tar.addfile(info)
    return buf.getvalue()


@settings(max_examples=150, deadline=None)
@given(st.lists(members, min_size=1, max_size=6))
def test_hostile_archives_extract_inside_or_not_at_all(specs: list[tuple[str, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        dest, beside = root / "dest", root / "beside"
        dest.mkdir()
        beside.mkdir()
        (beside / "keep.txt").write_text("host file")
        try:
            hostfiles.extract_safely([hostile_archive(specs)], dest)
        except ValueError as err:
            assert "would land outside" in str(err) or "cannot be extracted" in str(err)
            assert "\n" not in str(err)
        assert tree(root) - tree(dest) == {str(dest), str(beside), str(beside / "keep.txt")}
        assert (beside / "keep.txt").read_text() == "host file"
        for path in map(Path, tree(dest)):
            assert not path.is_symlink() and (path.is_file() or path.is_dir()), path
            assert dest.resolve() in path.resolve().parents


@pytest.mark.parametrize("spec", ["/var/run/docker.sock:/x", "/run/podman:/x", "/:/host",
                                  "/run:/x", "/run/podman/podman.sock:/x:ro"])
def test_engine_socket_mounts_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="the engine's socket") as info:
        SandboxConfig(volumes=[spec], profile="permissive").resolve()
    assert "\n" not in str(info.value)


def test_home_and_the_folders_above_it_mount_read_only(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "users" / "me"
    (home / "project").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    volumes = [f"{home}:/h", f"{home.parent}:/users", f"{home / 'project'}:/project"]
    binds = SandboxConfig(volumes=volumes, mount_home=True,
                          unsafe_host_paths=True).resolve().binds
    modes = {bind.target: bind.read_only for bind in binds}
    assert modes == {"/h": True, "/users": True, "/home/user": True, "/project": False}


def test_a_home_holding_credentials_is_never_mounted_without_the_operators_opt_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "users" / "me"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for config in (SandboxConfig(mount_home=True), SandboxConfig(volumes=[f"{home}:/h:ro"])):
        with pytest.raises(ConfigError, match="mounting .* in a sandbox refused"):
            config.resolve()


@pytest.mark.parametrize("runtime", ["runsc", "kata-runtime", "io.containerd.kata.v2"])
def test_stronger_runtimes_are_accepted_options(runtime: str) -> None:
    assert SandboxConfig(runtime=runtime).resolve().runtime == runtime
    assert parse_line_magic("sandbox", f"start --runtime {runtime}").options == {
        "runtime": runtime}


