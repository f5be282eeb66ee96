"""What a start takes from earlier processes instead of waiting for it, on the real engines:
kernel_info answers with the image's Python version before the sandbox is up; the first sandbox
is started by a child the kernel forks (and collects), and a failed one is told at the first
cell; the runner is the container's main process (no exec to wait for), and a persistent
sandbox's is an exec; a Podman start creates its container on the recorded path of Podman's
default seccomp profile, which it then checks against Podman's /info (and creates again when
Podman says another path)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from helpers.engines import TEST_IMAGE, get_engine
from helpers.kernels import execute, kernel_containers, running_kernel

from agentkernel.engine import Engine, connect_endpoint, podman
from agentkernel.runner_client import RunnerSession, launch_runner, runner_main_command
from agentkernel.sandbox import Sandbox
from agentkernel.sandbox.bundle import host_bundle
from agentkernel.sandbox.bundle_volume import _fill_lock, volume_name

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _kernelspec(kernelspec: None) -> None:
    """The kernel tests start their own kernels."""


def test_kernel_info_does_not_wait_for_the_sandbox(engine: Engine, test_image: str) -> None:
    """Once a fresh sandbox of the image told its Python version, the next kernel answers
    kernel_info with it while its own sandbox is still starting (held here at its bundle
    volume's lock, after the image is known): the client's ready wait overlaps the start."""
    with running_kernel() as (_km, kc):
        version = execute(kc, "import platform; platform.python_version()").result
    volume = volume_name(host_bundle(), engine.image_id(test_image))
    with contextlib.ExitStack() as held:
        held.enter_context(_fill_lock(volume))
        with running_kernel(startup_timeout=20) as (km, kc):  # kernel_info answered
            kc.kernel_info()
            info = kc.get_shell_msg(timeout=10)["content"]["language_info"]
            assert f"'{info['version']}'" == version["text/plain"]
            assert not kernel_containers(engine, km, running_only=False), "start held"
            held.close()
            assert execute(kc, "import platform; platform.python_version()").result == version
            assert len(kernel_containers(engine, km)) == 1


def _children(pid: int) -> list[str]:
    """The processes whose parent is ``pid``: "name state" of each, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:  # gone meanwhile
            continue
        name, _, rest = stat.rpartition(")")
        fields = rest.split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(f"{name.partition('(')[2]} {fields[0]}")
    return found


def test_the_first_sandbox_is_started_by_a_child_that_exits(engine: Engine,
                                                              test_image: str) -> None:
    """A cold kernel's sandbox is started by a child it forked at its first step, so the
    kernel's own start runs meanwhile on the other core: by the first result the child has
    handed the sandbox over, exited and been collected (no zombie), and the sandbox's reaper
    is the child's, not the kernel's (a start in the kernel's own process makes it the
    kernel's child); the sandbox is labelled as the kernel's all the same."""
    with running_kernel() as (km, kc):
        assert execute(kc, "21 * 2").result == {"text/plain": "42"}
        assert _children(km.provisioner.process.pid) == []
        assert len(kernel_containers(engine, km)) == 1


def test_a_failed_first_start_is_told_at_the_first_cell(engine: Engine, test_image: str) -> None:
    """The child's failed start leaves the kernel without a sandbox and says nothing until
    the first cell, which tries again and shows why, in one line."""
    missing = "agentkernel-no-such-image:0"
    with running_kernel(env={"AGENTKERNEL_IMAGE": missing}) as (km, kc):
        run = execute(kc, "1")
        assert run.error is not None and run.error["ename"] == "ImageNotAvailable", run.error
        assert missing in run.error["evalue"] and "\n" not in run.error["evalue"]
        assert _children(km.provisioner.process.pid) == []
        assert not kernel_containers(engine, km, running_only=False)


# The runner's parent's argv; 0 when the parent is outside the container (an exec's).
PARENT_ARGV = ("import os\n"
               "parent = f'/proc/{os.getppid()}/cmdline'\n"
               "open(parent, 'rb').read().split(b'\\0')[:4] if os.getppid() else 0")


def test_the_runner_is_the_containers_main_process(engine: Engine, test_image: str) -> None:
    """A kernel's runner was started with its container (its parent is the container's main
    shell, not an exec's), its output goes to no engine log, and the container outlives it:
    the kernel can still say inside it why the runner died."""
    with running_kernel() as (km, kc):
        parent = execute(kc, PARENT_ARGV).result["text/plain"]
        assert "b'agentkernel-runner'" in parent, parent
        (container,) = kernel_containers(engine, km)
        log_config = engine.api.inspect_container(container["Id"])["HostConfig"]["LogConfig"]
        assert log_config["Type"] == "none"
        death = execute(kc, "import os; os._exit(3)").error
        assert "runner exited with code 3" in death["evalue"], death
        assert [c["Id"] for c in kernel_containers(engine, km)] == [container["Id"]]


def test_a_persistent_sandbox_runs_its_runner_by_exec(engine: Engine, test_image: str) -> None:
    """A persistent sandbox has no lifeline to carry the runner, so ``main`` is ignored and
    the runner is an exec (its parent is outside the container's process namespace)."""
    sandbox = Sandbox(image=test_image, network=False, persistent=True, engine=engine)
    try:
        sandbox.start(ipython=True, main=runner_main_command())
        assert sandbox.take_main_stream() is None
        stream, ready = launch_runner(sandbox)
        with RunnerSession(stream, ready=ready) as session:
            events: list[dict] = []
            session.execute(PARENT_ARGV, on_event=events.append, timeout=60)
            (result,) = [e for e in events if e["type"] == "result"]
            assert result["data"]["text/plain"] == "0"
    finally:
        sandbox.remove()


def _confined_text(default: Path) -> str:
    return json.dumps(podman.confined_profile(json.loads(default.read_text())), sort_keys=True)


@pytest.mark.parametrize("record", ["another profile", "a missing file", "not a profile"])
def test_podman_start_checks_the_recorded_profile_path(tmp_path: Path, record: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A start on a stale record ends with the confined form of Podman's real default and
    records that path for the next process: another file (the default profile's rules in
    another order) is found out once /info answers, and the first container is removed and
    made again; a record naming a missing or unreadable file sends the create to /info."""
    shared = get_engine("podman")
    actual = Path(shared._host()["security"]["seccompProfilePath"])
    stale = tmp_path / "old-seccomp.json"
    default = json.loads(actual.read_text())
    if record == "another profile":
        stale.write_text(json.dumps({**default, "syscalls": default["syscalls"][::-1]}))
        assert _confined_text(stale) != _confined_text(actual)
    elif record == "not a profile":
        stale.write_text("{")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # records and profiles
    # a record of the stale path by a Podman process that is gone: taken, then checked
    podman.record_host(shared.base_url, "another-boot/1/1", {
        **shared._host(), "security": {"seccompProfilePath": str(stale)}})
    fresh = connect_endpoint("podman", shared.endpoint())  # /info not asked yet
    with Sandbox(image=TEST_IMAGE, network=False, engine=fresh) as sandbox:
        options = fresh.api.inspect_container(sandbox.container_id)["HostConfig"]["SecurityOpt"]
        (profile,) = [o.split("=", 1)[1] for o in options if o.startswith("seccomp=")]
        made_from_actual = Path(profile).read_text() == _confined_text(actual)
        assert made_from_actual, f"{profile} is not the confined form of {actual}"
        assert podman.recorded_source(shared.base_url) == str(actual)
        assert sandbox.exec("echo hi").stdout == "hi\n"
        named = fresh.api.containers(all=True, filters={"name": sandbox.container_name})
        assert [c["Id"] for c in named] == [sandbox.container_id]


def test_podman_start_without_info_when_the_same_service_answered_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once /info has answered, a later process served by the same Podman process (pid and
    start time) takes its host size and profile path from the record: no /info at all, and
    the sandbox still gets the confined form of Podman's default profile."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = connect_endpoint("podman", get_engine("podman").endpoint())
    actual = Path(first._host()["security"]["seccompProfilePath"])  # asked, and recorded
    later = connect_endpoint("podman", first.endpoint())
    asked: list[str] = []
    libpod = later._libpod
    monkeypatch.setattr(later, "_libpod", lambda method, path, *args, **kwargs: (
        asked.append(path), libpod(method, path, *args, **kwargs))[1])
    with Sandbox(image=TEST_IMAGE, network=False, engine=later) as sandbox:
        options = later.api.inspect_container(sandbox.container_id)["HostConfig"]["SecurityOpt"]
        (profile,) = [o.split("=", 1)[1] for o in options if o.startswith("seccomp=")]
        assert Path(profile).read_text() == _confined_text(actual)
        assert sandbox.exec("echo hi").stdout == "hi\n"
    assert "/info" not in asked and later.ncpu == first.ncpu


def test_the_storage_quota_answer_is_asked_once_per_engine_service(
        engine: Engine, test_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first process asks the engine with a probe container whether its storage can limit
    a sandbox's size; a later process served by the same engine process takes the answer from
    the record (no probe on its start's path), and one served by another process asks."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = connect_endpoint(engine.kind, engine.endpoint())
    answer = first.storage_quota_refusal(engine.image_id(test_image))
    later = connect_endpoint(engine.kind, engine.endpoint())
    probes: list[str] = []
    ask = later._ask_storage_quota
    monkeypatch.setattr(later, "_ask_storage_quota", lambda image: (probes.append(image),
                                                                    ask(image))[1])
    assert later.storage_quota_refusal(engine.image_id(test_image)) == answer
    assert probes == [], "the same engine process answered already"
    other = connect_endpoint(engine.kind, engine.endpoint())
    other.__dict__["_service"] = "another-boot/1/1"  # as if the engine had restarted
    monkeypatch.setattr(other, "_ask_storage_quota", lambda image: (probes.append(image),
                                                                    ask(image))[1])
    assert other.storage_quota_refusal(engine.image_id(test_image)) == answer
    assert probes == [engine.image_id(test_image)]
