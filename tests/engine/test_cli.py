"""The ``agentkernel`` command, run as a subprocess against the real engines (Docker, Podman)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import secrets
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.errors import APIError, NotFound
from helpers.engines import RUN_ID, RUN_LABEL

from agentkernel.engine import Engine
from agentkernel.sandbox import LABEL, LABEL_OWNER, LABEL_PERSISTENT, Sandbox
from agentkernel.sandbox.bundle_volume import LABEL_BUNDLE, LABEL_IMAGE, ensure_volume

AGENTKERNEL = str(Path(sys.executable).with_name("agentkernel"))
TEST_LABEL = "agentkernel.clitest"
SUBCOMMANDS = ["list", "gc", "run", "shell", "status", "stop", "image", "image build", "install"]


def cli(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``agentkernel ARGS`` with ``stdin`` piped; text output captured."""
    proc = subprocess.run(
        [AGENTKERNEL, *args], input=stdin, capture_output=True, timeout=timeout,
        env=env if env is not None else dict(os.environ),
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The run failed with ``code`` and exactly one ``agentkernel: error:`` line, no traceback."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentkernel: error: "), result.stderr
    return lines[0]


@pytest.fixture
def token(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A label value for this test: every container it makes carries it and goes afterwards."""
    value = secrets.token_hex(4)
    labels = [os.environ.get("AGENTKERNEL_LABELS", ""), f"{TEST_LABEL}={value}"]
    monkeypatch.setenv("AGENTKERNEL_LABELS", ",".join(filter(None, labels)))
    yield value
    for container in tagged(engine, value):
        with contextlib.suppress(NotFound, APIError):
            engine.api.remove_container(container["Id"], force=True)


def tagged(engine: Engine, value: str) -> list[dict]:
    """The sandboxes (agentkernel-labelled containers) carrying this test's label."""
    return engine.api.containers(
        all=True, filters={"label": [LABEL, f"{TEST_LABEL}={value}"]}
    )


@pytest.fixture
def persistent(engine: Engine, test_image: str, token: str) -> Iterator[Sandbox]:
    """A started persistent sandbox, removed afterwards."""
    sandbox = Sandbox(image=test_image, name=f"clitest-{token}", persistent=True,
                      engine=engine).start()
    yield sandbox
    sandbox.remove()


# -- usage ------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command: str) -> None:
    result = cli(*command.split(), "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"usage: agentkernel {command}")


def test_usage_errors_are_one_line() -> None:
    port = assert_one_line_error(cli("run", "-p", "notaport", "--", "true"), 2)
    assert "invalid port spec 'notaport'" in port
    memory = assert_one_line_error(cli("run", "--memory", "lots", "--", "true"), 2)
    assert "invalid memory" in memory
    assert "needs a command" in assert_one_line_error(cli("run"), 2)
    assert "invalid choice" in assert_one_line_error(cli("nonsense"), 2)
    assert "only goes with --all" in assert_one_line_error(cli("gc", "--persistent"), 2)


def test_unreachable_engine_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTKERNEL_ENGINE": "docker",
           "DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"}
    assert "no container engine answered" in assert_one_line_error(cli("list", env=env), 1)


def test_install_delegates_to_kernelspec(tmp_path: Path) -> None:
    result = cli("install", "--prefix", str(tmp_path))
    assert result.returncode == 0, result
    spec = json.loads((tmp_path / "share/jupyter/kernels/agentkernel/kernel.json").read_text())
    assert spec["language"] == "python"


# -- run --------------------------------------------------------------------------------------
def test_run_prints_output_and_exit_code(engine_name: str, test_image: str, token: str) -> None:
    result = cli("run", "--", "python3", "-c", "print(1)")
    assert (result.returncode, result.stdout, result.stderr) == (0, "1\n", "")
    result = cli("run", "-e", "WHO=err", "--", "sh", "-c", "echo $WHO >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "", "err\n")


def test_run_leaves_no_container(engine: Engine, test_image: str, token: str) -> None:
    proc = subprocess.Popen([AGENTKERNEL, "run", "--", "sleep", "3"])
    deadline = time.monotonic() + 30
    while not tagged(engine, token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(tagged(engine, token)) == 1, "the run's sandbox never showed up"
    assert proc.wait(timeout=60) == 0
    assert tagged(engine, token) == []


def test_run_missing_image(engine_name: str, token: str) -> None:
    line = assert_one_line_error(cli("run", "--image", "does-not-exist:1", "--", "true"), 1)
    assert "does-not-exist:1" in line


# -- list, status, stop -----------------------------------------------------------------------
def test_list_shows_persistent_sandbox(persistent: Sandbox) -> None:
    result = cli("list")
    assert result.returncode == 0, result
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "IMAGE", "PROFILE", "PORTS"]
    assert [persistent.name, "running"] in [row.split()[:2] for row in rows]
    listed = {entry["name"]: entry for entry in json.loads(cli("list", "--json").stdout)}
    assert listed[persistent.name]["persistent"] is True


def test_status_stop_and_remove(persistent: Sandbox) -> None:
    name = persistent.name
    assert f"sandbox {name}: running" in cli("status", name).stdout
    assert cli("stop", name).returncode == 0
    assert f"sandbox {name}: exited" in cli("status", name).stdout
    assert name not in cli("list").stdout and name in cli("list", "--all").stdout
    assert cli("stop", "--rm", name).returncode == 0
    assert "no sandbox named" in assert_one_line_error(cli("status", name), 1)


# -- gc ---------------------------------------------------------------------------------------
def fake_sandbox(engine: Engine, image: str, token: str, name: str, owner: str, *,
                 persistent: bool = False, command: str = "sleep 300") -> str:
    """A container labelled like a sandbox, made with the engine API directly."""
    labels = {LABEL: name, LABEL_OWNER: owner, TEST_LABEL: token,
              LABEL_PERSISTENT: "true" if persistent else "false"}
    created = engine.api.create_container(image, command=command.split(), labels=labels,
                                          name=f"agentkernel-{name}")
    engine.api.start(created["Id"])
    return name


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_gc(engine: Engine, test_image: str, token: str) -> None:
    host = socket.gethostname()
    orphan = fake_sandbox(engine, test_image, token, f"gc-orphan-{token}", f"{host}:{dead_pid()}")
    alive = fake_sandbox(engine, test_image, token, f"gc-alive-{token}", f"{host}:{os.getpid()}")
    exited = fake_sandbox(engine, test_image, token, f"gc-exited-{token}",
                          f"{host}:{os.getpid()}", command="true")
    kept = fake_sandbox(engine, test_image, token, f"gc-kept-{token}", f"{host}:{dead_pid()}",
                        persistent=True, command="true")
    time.sleep(1)  # let the `true` ones exit

    def names() -> set[str]:
        return {c["Labels"][LABEL] for c in tagged(engine, token)}

    dry = cli("gc", "--dry-run")
    assert f"would remove {orphan}" in dry.stdout and f"would remove {exited}" in dry.stdout
    assert alive not in dry.stdout and kept not in dry.stdout
    assert names() == {orphan, alive, exited, kept}
    everything = cli("gc", "--all", "--persistent", "--dry-run").stdout
    assert all(f"would remove {n}" in everything for n in (orphan, alive, exited, kept))

    result = cli("gc")
    assert result.returncode == 0, result
    assert f"removed {orphan}" in result.stdout and "owner process" in result.stdout
    assert f"removed {exited}" in result.stdout
    assert names() == {alive, kept}


def test_gc_bundles(engine: Engine, test_image: str, token: str) -> None:
    current = ensure_volume(engine, test_image)
    labels = engine.volume_labels(current)
    assert labels is not None
    older = f"agentkernel-ipython-older-{token}"
    orphaned = f"agentkernel-ipython-orphaned-{token}"
    used = f"agentkernel-ipython-used-{token}"
    engine.create_volume(older, {**labels, LABEL_BUNDLE: f"older-{token}"})
    engine.create_volume(orphaned, {**labels, LABEL_IMAGE: "sha256:" + "0" * 64})
    engine.create_volume(used, {**labels, LABEL_BUNDLE: f"used-{token}"})
    # a stopped container that mounts an old bundle: a persistent sandbox to start again later
    holder = engine.create_container({
        "Image": engine.image_id(test_image), "Cmd": ["true"], "Labels": {RUN_LABEL: RUN_ID},
        "HostConfig": {"Binds": [f"{used}:/opt/agentkernel:ro"]}}, f"agentkernel-holder-{token}")
    try:
        dry = cli("gc", "--bundles", "--dry-run").stdout
        assert f"would remove volume {older}: IPython" in dry
        assert f"would remove volume {orphaned}: its image is gone" in dry
        assert f"kept volume {used} (IPython" in dry
        assert f"used by agentkernel-holder-{token}" in dry
        assert current not in dry
        result = cli("gc", "--bundles")
        assert result.returncode == 0, result
        assert f"removed volume {older}" in result.stdout
        assert f"kept volume {used}" in result.stdout
        assert engine.volume_labels(older) is None and engine.volume_labels(orphaned) is None
        assert engine.volume_labels(current) is not None and engine.volume_labels(used) is not None
    finally:
        engine.remove_container(holder)
        for name in (older, orphaned, used):
            engine.remove_volume(name)


# -- shell ------------------------------------------------------------------------------------
def test_shell_piped_and_recorded(persistent: Sandbox, tmp_path: Path) -> None:
    cast = tmp_path / "x.cast"
    result = cli("shell", persistent.name, "--record", str(cast), stdin=b"echo hello; exit 4\n")
    assert result.returncode == 4, result
    header, *events = [json.loads(line) for line in cast.read_text().splitlines()]
    assert header["version"] == 2 and header["title"]
    assert isinstance(header["width"], int) and isinstance(header["height"], int)
    assert isinstance(header["timestamp"], int)
    assert set(header["env"]) == {"SHELL", "TERM"} and header["env"]["SHELL"] == "/bin/bash"
    assert all(isinstance(t, float) and kind in ("o", "i", "r") for t, kind, _ in events)
    assert ["i", "echo hello; exit 4\n"] in [e[1:] for e in events]
    assert "hello\r\n" in "".join(data for _, kind, data in events if kind == "o")
    assert any(kind == "o" and "hello" in data for _, kind, data in events)


def test_shell_ends_at_end_of_input(persistent: Sandbox, tmp_path: Path) -> None:
    """Input from a regular file, no `exit`: the shell ends when the file does."""
    script = tmp_path / "commands"
    script.write_text("echo hi\n")
    with open(script, "rb") as stdin:
        result = subprocess.run([AGENTKERNEL, "shell", persistent.name, "--shell", "/bin/sh"],
                                stdin=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0 and b"hi\r\n" in result.stdout, result


def read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    """Read a pty master until ``marker`` appears."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        assert time.monotonic() < deadline, f"{marker!r} never came; got {seen[-300:]!r}"
        if select.select([fd], [], [], 0.2)[0]:
            seen += os.read(fd, 65536)
    return seen


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_shell_on_a_terminal(persistent: Sandbox) -> None:
    """Raw mode, window size at start and on SIGWINCH, terminal restored afterwards."""
    master, slave = pty.openpty()
    set_size(slave, 40, 120)
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(
        [AGENTKERNEL, "shell", persistent.name], stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    try:
        read_until(master, b"# ")
        assert termios.tcgetattr(slave)[3] & termios.ECHO == 0, "not in raw mode"
        os.write(master, b"stty size\r")
        read_until(master, b"40 120")
        set_size(master, 50, 132)  # the kernel sends SIGWINCH to the agentkernel process
        time.sleep(0.5)
        os.write(master, b"stty size\r")
        read_until(master, b"50 132")
        os.write(master, b"exit 7\r")
        assert proc.wait(timeout=30) == 7
        assert termios.tcgetattr(slave) == before
    finally:
        proc.kill()
        os.close(master)
        os.close(slave)


# -- image build ------------------------------------------------------------------------------
def test_image_build_if_missing_skips(engine_name: str, test_image: str) -> None:
    result = cli("image", "build", "--if-missing", "--tag", test_image, timeout=30)
    assert result.returncode == 0, result
    assert "nothing to build" in result.stdout


def test_image_build_needs_debootstrap(engine_name: str) -> None:
    env = {**os.environ, "PATH": str(Path(AGENTKERNEL).parent)}
    line = assert_one_line_error(cli("image", "build", "--tag", "agentkernel-nope:1", env=env), 1)
    assert "apt-get install debootstrap" in line
