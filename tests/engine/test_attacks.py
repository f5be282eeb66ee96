"""A hostile notebook against the operator's policy: every attack a cell tried, refused.

Each test is a row of the table of the security issue ("The cell must not command its own
sandbox"), played as a hostile notebook would, through jupyter_client on Docker and Podman:
kernels run under the DEFAULT policy (no policy file) or under a stricter operator setting,
in a throw-away home folder holding the things an attacker wants (SSH keys, a shell rc file,
Jupyter's runtime folder with connection files). Each refusal must be one line naming the rule;
nothing on the host may change.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.faultkit import one_line_error, proc_stats
from helpers.kernels import (
    execute,
    interrupt_running,
    kernel_containers,
    running_kernel,
    wait_until,
)
from helpers.policies import (
    DEFAULT,
    HOST_CPUS,
    HOST_MEMORY_SHARE_MB,
    env_with,
    write_policy,
)
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from agentkernel.engine import Engine

pytestmark = pytest.mark.engine
RULE = "c.SandboxPolicy"  # every policy refusal names where the operator sets the rule


@pytest.fixture(autouse=True)
def _kernelspec(kernelspec: None) -> None:
    """Every test here starts kernels."""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home folder with what an attacker wants, and a project (the notebook's folder)."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".bashrc").write_text("# original\n")
    runtime = home / ".local" / "share" / "jupyter" / "runtime"
    runtime.mkdir(parents=True)
    (runtime / "kernel-other.json").write_text(json.dumps({"key": "hmac-of-another-kernel"}))
    (home / "project").mkdir()
    (home / "project" / "data.csv").write_text("a,b\n1,2\n")
    return home


def kernel_env(home: Path, **extra: str) -> dict[str, str]:
    """A kernel under the default policy, in ``home``."""
    return {**DEFAULT, "HOME": str(home), **extra}


@pytest.fixture(scope="module")
def hostile(engine_name: str, test_image: str, kernelspec: None,
            home: Path) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """A kernel under the default policy, its notebook in ``home/project``."""
    with running_kernel(env=kernel_env(home), cwd=home / "project") as pair:
        yield pair


@pytest.fixture
def hc(hostile: tuple[KernelManager, BlockingKernelClient]) -> BlockingKernelClient:
    client = hostile[1]
    if execute(client, "1").status != "ok":
        assert execute(client, "%sandbox restart").status == "ok"
    return client


def refused(kc: BlockingKernelClient, code: str, *fragments: str) -> str:
    """Run a hostile cell; it must fail with one line holding every fragment."""
    return one_line_error(execute(kc, code), *fragments)


def untouched(home: Path) -> None:
    assert (home / ".bashrc").read_text() == "# original\n"
    assert sorted(p.name for p in (home / "project").iterdir()) == ["data.csv"]


# -- rows 1, 2: host files through upload and download --------------------------------------------
def test_row1_download_cannot_write_a_host_file(hc: BlockingKernelClient, home: Path) -> None:
    assert execute(hc, "open('/tmp/payload', 'w').write('echo pwned')").status == "ok"
    refused(hc, "%sandbox download /tmp/payload ~/.bashrc", "refused", "outside the folders")
    refused(hc, "%sandbox download /tmp/payload ~/.ssh/authorized_keys", "refused", "credentials")
    refused(hc, "%sandbox download /tmp/payload data2.csv", "refused", "read-only", RULE)
    refused(hc, "%sandbox download /tmp/payload /tmp/agentkernel-planted", "refused", RULE)
    assert not Path("/tmp/agentkernel-planted").exists()
    untouched(home)


def test_row2_upload_cannot_read_host_secrets(hc: BlockingKernelClient, home: Path) -> None:
    refused(hc, "%sandbox upload ~/.local/share/jupyter/runtime /tmp/x", "refused")
    refused(hc, "%sandbox upload ~/.ssh /tmp/x", "refused", "credentials")
    refused(hc, "%sandbox upload /etc/shadow /tmp/x", "refused", "system folder")
    assert execute(hc, "import os; os.path.exists('/tmp/x')").result == {"text/plain": "False"}
    # what the policy allows still works: the notebook's own folder, read-only
    assert execute(hc, "%sandbox upload data.csv /tmp/data.csv").status == "ok"
    assert execute(hc, "open('/tmp/data.csv').read()").result == {"text/plain": "'a,b\\n1,2\\n'"}


# -- rows 3, 4, 5: mounts ------------------------------------------------------------------------
@pytest.mark.parametrize("volumes, fragment", [
    ("-v /etc:/hostetc", "system folder"),
    ("-v /srv:/hs", "outside the folders the policy allows"),
    ("-v /proc:/hp", "system folder"),
    ("-v /run/docker:/d", "system folder"),
    ("-v /var/run/docker:/d", "system folder"),
    ("-v /run/docker/containerd:/d", "engine's socket"),
    ("-v /var/lib/docker:/d", "system folder"),
    ("-v /:/host", "engine's socket"),
    ("-v {home}:/h:ro", "holds"),
    ("-v {project}:/w", "read-only"),
    ("-v agentkernel-bundle-volume:/v", "named_volumes"),
])
def test_rows3_to_5_mounts_outside_the_policy(hc: BlockingKernelClient, home: Path,
                                               volumes: str, fragment: str) -> None:
    before = execute(hc, "import socket; socket.gethostname()").result
    spec = volumes.format(project=home / "project", home=home)
    refused(hc, f"%sandbox start {spec}", "refus", fragment)
    assert execute(hc, "import socket; socket.gethostname()").result == before, (
        "a refused start leaves the running sandbox as it was")


# -- rows 6, 7, 18: the operator's profile, limits and runtime are ceilings --------------------
@pytest.fixture(scope="module")
def restricted(engine_name: str, test_image: str, kernelspec: None, home: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlockingKernelClient]:
    """A kernel whose operator chose the restrictive profile and its size as the limits."""
    policy = write_policy(tmp_path_factory.mktemp("restricted") / "policy.json",
                          max_cpus=0.5, max_memory_mb=256)
    env = {**kernel_env(home, AGENTKERNEL_PROFILE="restrictive"), **env_with(policy)}
    with running_kernel(env=env, cwd=home / "project") as (_km, kc):
        yield kc


@pytest.mark.parametrize("code, fragment", [
    ("%sandbox start --profile permissive", "most permissive profile is restrictive"),
    ("%sandbox start --profile moderate", "most permissive profile is restrictive"),
    ("%sandbox start --user 0", "runs cells as 65534"),
    ("%sandbox start --cpus 1", "at most 0.5"),
    ("%sandbox start --memory 4096", "at most 256"),
    ("%sandbox start --pids-limit 100000", "at most 128"),
    ("%sandbox resize 2 4096", "at most 0.5"),
    ("%sandbox resize 0.5 1024", "at most 256"),
])
def test_rows6_7_a_restrictive_operator_stays_restrictive(restricted: BlockingKernelClient,
                                                           code: str, fragment: str) -> None:
    refused(restricted, code, "refused", fragment, RULE)
    assert execute(restricted, "import os; os.getuid()").result == {"text/plain": "65534"}


def test_row7_resize_within_the_ceiling_works(restricted: BlockingKernelClient) -> None:
    run = execute(restricted, "%sandbox resize 0.25 128")
    assert run.status == "ok" and "verified" in run.stream()
    assert execute(restricted, "%sandbox resize 0.5 256").status == "ok"


def test_row7_the_default_ceiling_is_the_hosts(hc: BlockingKernelClient) -> None:
    """Without max_cpus / max_memory_mb a cell sizes its sandbox up to this host: all its
    CPUs and half its memory; the profile's 1 CPU and 512 MB are only the starting size."""
    cpus, memory_mb = min(2, HOST_CPUS), 1024
    run = execute(hc, f"%sandbox resize {cpus} {memory_mb}")
    assert run.status == "ok" and "verified" in run.stream(), run.error or run.stream()
    assert f"cpus {cpus}, memory {memory_mb} MB" in execute(hc, "%sandbox status").stream()
    refused(hc, f"%sandbox resize {HOST_CPUS + 1} 512", "refused",
            f"at most {HOST_CPUS}, this host's CPUs", "max_cpus")
    refused(hc, f"%sandbox start --memory {HOST_MEMORY_SHARE_MB + 1}", "refused",
            f"at most {HOST_MEMORY_SHARE_MB}, 50% of this host's memory", "max_memory_mb")
    assert execute(hc, "%sandbox resize 1 512").status == "ok"


def test_row18_the_operators_runtime_is_kept(engine_name: str, home: Path, tmp_path: Path
                                              ) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "agentkernel_config.py").write_text("c.SandboxConfig.runtime = 'runsc'\n")
    env = kernel_env(home, JUPYTER_CONFIG_DIR=str(config), AGENTKERNEL_EAGER_START="0")
    with running_kernel(env=env, cwd=home / "project") as (_km, kc):
        refused(kc, "%sandbox start --runtime runc", "runtime 'runc' refused", "runsc", RULE)


# -- row 8: ports on every interface --------------------------------------------------------------
@pytest.mark.parametrize("spec", ["0.0.0.0:18080:8080", "[::]:18080:8080", "10.0.0.1::80"])
def test_row8_ports_only_on_loopback(hc: BlockingKernelClient, spec: str) -> None:
    refused(hc, f"%sandbox start -p {spec}", "refused", "port_addresses")
    run = execute(hc, "%sandbox start -p 127.0.0.1::8080")
    assert run.status == "ok"
    assert execute(hc, "%sandbox ports").stream().startswith("127.0.0.1:")


# -- row 9: another kernel's sandbox --------------------------------------------------------------
def test_row9_another_kernels_sandbox_is_out_of_reach(engine: Engine, hc: BlockingKernelClient,
                                                      hostile: tuple, home: Path) -> None:
    assert execute(hc, "%sandbox start --name victim-sandbox-row9").status == "ok"
    assert execute(hc, "secret = 'mine'").status == "ok"
    with running_kernel(env=kernel_env(home), cwd=home / "project") as (_km, other):
        listing = execute(other, "%sandbox list").stream()
        assert "victim-sandbox-row9" not in listing
        refused(other, "%sandbox connect victim-sandbox-row9", "refused", "not started by this "
                "kernel", "allow_connect")
        refused(other, "%sandbox start --name victim-sandbox-row9 --persistent", "refused")
    assert execute(hc, "secret").result == {"text/plain": "'mine'"}
    assert len(kernel_containers(engine, hostile[0])) == 1
    assert execute(hc, "%sandbox start").status == "ok"


def test_row9_persistent_sandboxes_need_the_operator(hc: BlockingKernelClient) -> None:
    refused(hc, "%sandbox start --persistent", "persistent sandboxes refused", "allow_persistent")


# -- rows 11, 12: every request gets its reply ----------------------------------------------------
@pytest.mark.parametrize("code", [
    "print('\\ud800')",
    "import sys; sys.stderr.write('x\\udfff')",
    "'\\ud800'",
    "raise ValueError('\\ud800')",
])
def test_row11_lone_surrogates_still_get_a_reply(hc: BlockingKernelClient, code: str) -> None:
    run = execute(hc, code, timeout=30)
    assert run.status in ("ok", "error")
    assert execute(hc, "1 + 1").result == {"text/plain": "2"}


@pytest.mark.parametrize("cursor_pos", [10**9, -5, None, "x", True, 2.5])
@pytest.mark.parametrize("request_type", ["complete", "inspect"])
def test_row12_absurd_cursor_positions_get_a_reply(hc: BlockingKernelClient, request_type: str,
                                                    cursor_pos: object) -> None:
    content = {"code": "print", "cursor_pos": cursor_pos}
    if request_type == "inspect":
        content["detail_level"] = 0
    msg = hc.session.msg(f"{request_type}_request", content)
    hc.shell_channel.send(msg)
    reply = hc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    if cursor_pos is None:
        assert reply["content"]["status"] == "ok"
    else:
        assert reply["content"]["status"] == "error"
        assert "cursor_pos" in reply["content"]["evalue"]
    assert execute(hc, "1 + 1").result == {"text/plain": "2"}


def test_row12_requests_without_their_fields_get_a_reply(hc: BlockingKernelClient) -> None:
    for kind, content in (("complete", {}), ("inspect", {"code": 5}), ("is_complete", {})):
        msg = hc.session.msg(f"{kind}_request", content)
        hc.shell_channel.send(msg)
        reply = hc.get_shell_msg(timeout=30)
        assert reply["msg_type"] == f"{kind}_reply" and reply["content"]["status"] == "error"


@pytest.mark.parametrize("content, field", [
    ({"hist_access_type": "range", "session": 0, "start": "x", "stop": None}, "start"),
    ({"hist_access_type": "range", "session": 0, "start": 1, "stop": "y"}, "stop"),
    ({"hist_access_type": "range", "session": "s", "start": 1, "stop": None}, "session"),
    ({"hist_access_type": "range", "session": 0, "start": 1.5, "stop": None}, "start"),
    ({"hist_access_type": "tail", "n": "x"}, "n"),
    ({"hist_access_type": "tail", "n": -1}, "n"),
    ({"hist_access_type": "search", "pattern": 5, "n": 3}, "pattern"),
    ({"hist_access_type": 7}, "hist_access_type"),
    ({"hist_access_type": "range", "session": 0, "start": -2, "stop": None}, None),
    ({"hist_access_type": "range", "session": 0, "start": 10**30, "stop": None}, None),
    ({"hist_access_type": "tail", "n": 10**30}, None),
    ({"hist_access_type": "tail", "n": 1, "bogus": 1}, None),
])
def test_row12_malformed_history_requests_get_a_reply(hc: BlockingKernelClient, content: dict,
                                                      field: str | None) -> None:
    """The requests the local python3 kernel leaves without a reply (its handler raises) get
    an error naming the field; the ones it answers are answered as it does."""
    msg = hc.session.msg("history_request", {"output": False, "raw": True, **content})
    hc.shell_channel.send(msg)
    reply = hc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert reply["msg_type"] == "history_reply"
    if field is None:
        assert reply["content"]["status"] == "ok", reply["content"]
    else:
        assert reply["content"]["status"] == "error"
        assert reply["content"]["evalue"].startswith(f"invalid {field} "), reply["content"]
    assert execute(hc, "1 + 1").result == {"text/plain": "2"}


# -- rows 14, 16: what comes out is bounded -------------------------------------------------------
# Terminal control sequences (xterm's OSC 52 clipboard, OSC 0 title, OSC 8 links, DCS, APC, screen
# clear) in what a cell prints and raises: only the SGR colours reach the page.
TERMINAL_SEQUENCES = r'''import sys
sys.stdout.write("a\x1b]52;c;cm0gLXJmIH4K\x07b \x1b[31mred\x1b[0m\n")
sys.stdout.flush()
sys.stderr.write("c\x1b]0;pwned\x07d\x1b]8;;javascript:alert(1)\x1b\\link\x1b]8;;\x1b\\\n")
sys.stderr.flush()
raise ValueError("e\x1bP+q544e\x1b\\f\x1b_apc\x1b\\\x1b[2J")
'''


def test_row16_terminal_control_sequences_do_not_reach_the_page(hc: BlockingKernelClient) -> None:
    run = execute(hc, TERMINAL_SEQUENCES)
    for text in [run.stream("stdout"), run.stream("stderr"), run.error["evalue"],
                 *run.error["traceback"]]:
        controls = re.sub(r"\x1b\[[0-9;:]*m", "", text)
        assert not re.search(r"[\x1b\x80-\x9f]", controls), repr(text)
    assert run.stream("stdout") == "ab \x1b[31mred\x1b[0m\n"
    assert run.stream("stderr") == "cdlink\n" and run.error["evalue"] == "ef"
    assert any("\x1b[" in line for line in run.error["traceback"]), "IPython's colours stay"


def test_row14_downloads_are_bounded(engine_name: str, home: Path, tmp_path: Path) -> None:
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    policy = write_policy(tmp_path / "policy.json",
                          host_folders=["{notebook}:ro", f"{exchange}:rw"], max_download_mb=8)
    env = {**kernel_env(home), **env_with(policy)}
    with running_kernel(env=env, cwd=home / "project") as (km, kc):
        assert execute(kc, "f = open('/tmp/sparse', 'wb'); f.truncate(512 << 20); f.close()"
                       ).status == "ok"
        before = proc_stats(km.provisioner.process.pid).rss_mb
        refused(kc, f"%sandbox download /tmp/sparse {exchange}/sparse", "larger than its limit")
        assert not list(exchange.iterdir()), "nothing is left on the host"
        assert proc_stats(km.provisioner.process.pid).rss_mb - before < 64
        assert execute(kc, "open('/tmp/small', 'wb').write(b'x' * 1000)").status == "ok"
        assert execute(kc, f"%sandbox download /tmp/small {exchange}/small").status == "ok"
        assert (exchange / "small").read_bytes() == b"x" * 1000


def test_row16_append_never_reads_a_device(hc: BlockingKernelClient,
                                           hostile: tuple) -> None:
    assert execute(hc, "%sandbox start --profile restrictive").status == "ok"
    assert execute(hc, "import os; os.symlink('/dev/zero', '/tmp/z')").status == "ok"
    pid = hostile[0].provisioner.process.pid
    before = proc_stats(pid).rss_mb
    started = time.monotonic()
    refused(hc, "%%sandbox_file --append /tmp/z\nmore", "not a regular file")
    assert time.monotonic() - started < 10 and proc_stats(pid).rss_mb - before < 32
    assert execute(hc, "%%sandbox_file --append /tmp/notes.txt\nline\n").status == "ok"
    assert execute(hc, "open('/tmp/notes.txt').read()").result == {"text/plain": "'line\\n'"}
    assert execute(hc, "%sandbox start").status == "ok"


# -- row 17: the end does not depend on anything inside ---------------------------------------
STOP_LIFELINE = r"""
import os, signal
for pid in os.listdir('/proc'):
    try:
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()
    except OSError:
        continue
    if b'while read' in cmd and pid != '1':
        os.kill(int(pid), signal.SIGSTOP)
        print('stopped', pid)
"""


@pytest.mark.parametrize("profile", ["moderate", "restrictive"])
def test_row17_a_stopped_lifeline_does_not_keep_the_sandbox(engine: Engine, home: Path,
                                                            profile: str) -> None:
    with running_kernel(env=kernel_env(home, AGENTKERNEL_PROFILE=profile),
                        cwd=home / "project") as (km, kc):
        assert "stopped" in execute(kc, STOP_LIFELINE).stream()
        (container,) = kernel_containers(engine, km)
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        took = wait_until(lambda: not engine.inspect_container(container["Id"]), 15,
                          "the container removed after its kernel was killed")
        print(f"\n{engine.kind} {profile}: container gone {time.monotonic() - killed:.2f} s "
              "after the kernel's SIGKILL, its lifeline stopped")
        assert took < 3


# -- row 19: a kernel started in the home folder -------------------------------------------------
def test_row19_the_home_folder_is_never_mounted(engine_name: str, home: Path) -> None:
    with running_kernel(env=kernel_env(home), cwd=home) as (_km, kc):
        first = execute(kc, f"import os; os.listdir({str(home)!r}) if os.path.exists("
                            f"{str(home)!r}) else 'no workspace'")
        assert first.result == {"text/plain": "'no workspace'"}
        assert "notebook's folder is not mounted" in first.stream("stderr")
        refused(kc, "%sandbox start --mount-cwd", "refused", "holds")
        refused(kc, "%sandbox start --mount-home", "refused")


# -- row 20: a link planted in a writable folder -----------------------------------------------
def test_row20_a_planted_link_cannot_send_a_download_elsewhere(engine_name: str, home: Path,
                                                               tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    policy = write_policy(tmp_path / "policy.json", host_folders=["{notebook}:rw"],
                          workspace="bind")  # the host folder itself, writable
    env = {**kernel_env(home), **env_with(policy)}
    with running_kernel(env=env, cwd=project) as (_km, kc):
        run = execute(kc, f"import os; os.symlink('{elsewhere}', '{project}/results'); "
                          "open('/tmp/model.bin', 'wb').write(b'weights')")
        assert run.status == "ok", run.messages
        assert (project / "results").is_symlink()
        refused(kc, "%sandbox download /tmp/model.bin results/model.bin", "refused", "outside")
        assert execute(kc, "import os; os.mkdir('inner'); "
                           "os.symlink('inner', 'inner-link')").status == "ok"
        refused(kc, "%sandbox download /tmp/model.bin inner-link/model.bin", "refused",
                "goes through a link")  # even one that stays inside: links are never followed
        assert not (project / "inner" / "model.bin").exists()
        assert execute(kc, "%sandbox download /tmp/model.bin out/model.bin").status == "ok"
        assert (project / "out" / "model.bin").read_bytes() == b"weights"
    assert not list(elsewhere.iterdir())


# -- row 22: namespaces ----------------------------------------------------------------------------
UNSHARE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
results = []
for flag in (0x10000000, 0x20000):  # CLONE_NEWUSER, CLONE_NEWNS
    code = libc.unshare(flag)
    results.append(os.strerror(ctypes.get_errno()) if code else 'ALLOWED')
results
"""


@pytest.mark.parametrize("profile", ["restrictive", "moderate", "permissive"])
def test_row22_no_new_namespaces(kc: BlockingKernelClient, profile: str) -> None:
    assert execute(kc, f"%sandbox start --profile {profile}").status == "ok"
    assert execute(kc, UNSHARE).result == {
        "text/plain": "['Operation not permitted', 'Operation not permitted']"}
    assert execute(kc, "import subprocess; subprocess.run(['true']).returncode").result == {
        "text/plain": "0"}, "ordinary processes still start"
    assert execute(kc, "%sandbox start").status == "ok"


# -- row 13: no object in the sandbox can wedge the kernel -------------------------------------
STUCK = '''
import time
class Stuck:
    def __dir__(self):
        while True:
            pass
    def __repr__(self):
        while True:
            time.sleep(0.05)
    def __getattr__(self, name):
        while True:
            pass
stuck = Stuck()
'''


def introspect(kc: BlockingKernelClient, kind: str, code: str) -> tuple[dict, float]:
    """Send a complete/inspect request for the end of ``code``; (its reply, seconds taken)."""
    content = {"code": code, "cursor_pos": len(code)}
    if kind == "inspect":
        content["detail_level"] = 1
    msg = kc.session.msg(f"{kind}_request", content)
    started = time.monotonic()
    kc.shell_channel.send(msg)
    reply = kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    return reply["content"], time.monotonic() - started


def test_row13_a_wedged_object_cannot_block_the_kernel(hostile: tuple, hc: BlockingKernelClient
                                                       ) -> None:
    assert execute(hc, STUCK).status == "ok"
    reply, took = introspect(hc, "complete", "stuck.")
    assert reply["status"] == "ok" and took < 15, (reply, took)
    again, quick = introspect(hc, "inspect", "stuck")
    assert again["status"] == "ok" and not again.get("found") and quick < 15
    started = time.monotonic()
    assert execute(hc, "1 + 1", timeout=30).result == {"text/plain": "2"}
    assert time.monotonic() - started < 5, "later cells do not wait for the stuck completion"
    msg_id = hc.execute("import time; time.sleep(100)")
    time.sleep(1)
    interrupt_running(hostile[0], hc, msg_id)
    print(f"\ncompletion answered in {took:.1f} s, inspection in {quick:.1f} s")
    time.sleep(1)  # a stopped completion's traceback, had it been shown, would be out by now
    run = execute(hc, "del stuck")
    assert run.status == "ok" and not run.of("error"), run.messages


# -- row 21: a request the runner cannot take, a frame that never ends --------------------------
def test_row21_a_cell_too_large_to_send_gets_a_reply(hc: BlockingKernelClient) -> None:
    code = "x = '" + "\x01" * 11_500_000 + "'"  # JSON makes each character six bytes: 69 MB
    refused(hc, code, "too large to send")
    assert execute(hc, "1 + 1").result == {"text/plain": "2"}


HEADER_ONLY = '''import gc, os, struct
runner = next(o for o in gc.get_objects() if type(o).__name__ == "Runner")
os.write(runner._pump._out, struct.pack(">I", 50_000_000))
'''


def test_row21_a_frame_header_without_body_ends_in_a_reply(hc: BlockingKernelClient) -> None:
    started = time.monotonic()
    refused(hc, HEADER_ONLY, "broke the protocol", "cut off", "%sandbox restart")
    assert time.monotonic() - started < 30
    assert execute(hc, "%sandbox restart").status == "ok"
    assert execute(hc, "1 + 1").result == {"text/plain": "2"}


HEADER_THEN_TRICKLE = '''import gc, os, struct, threading, time
runner = next(o for o in gc.get_objects() if type(o).__name__ == "Runner")
fd = runner._pump._out
os.write(fd, struct.pack(">I", 1_000_000))

def trickle():  # a byte now and then: the stream stays open and the frame never ends
    while True:
        os.write(fd, b" ")
        time.sleep(0.5)

threading.Thread(target=trickle, daemon=True).start()
time.sleep(600)
'''


@pytest.mark.parametrize("interrupted", [False, True])
def test_row21_a_frame_header_then_a_trickle_ends_in_a_reply(
        hostile: tuple[KernelManager, BlockingKernelClient], hc: BlockingKernelClient,
        interrupted: bool) -> None:
    km = hostile[0]
    msg_id = hc.execute(HEADER_THEN_TRICKLE)
    if interrupted:  # the cell stops; the thread that trickles goes on
        time.sleep(2)
        km.interrupt_kernel()
    reply = hc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    evalue = reply["content"]["evalue"]
    assert reply["content"]["status"] == "error" and "\n" not in evalue, evalue
    assert all(f in evalue for f in ("broke the protocol", "cut off", "%sandbox restart"))
    assert execute(hc, "%sandbox restart").status == "ok"
    assert execute(hc, "1 + 1").result == {"text/plain": "2"}


def test_row21_downloads_onto_what_the_sandbox_reshaped(engine_name: str, home: Path,
                                                        tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    policy = write_policy(tmp_path / "policy.json", host_folders=["{notebook}:rw"],
                          workspace="bind")  # the host folder itself, writable
    with running_kernel(env={**kernel_env(home), **env_with(policy)}, cwd=project) as (_km, kc):
        assert execute(kc, "import os; open('out', 'w').close(); "
                           "os.mkdir('model.bin'); "
                           "open('model.bin/x', 'w').close(); "
                           "open('/tmp/m', 'w').write('weights')").status == "ok"
        refused(kc, "%sandbox download /tmp/m out/model.bin", "cannot")
        refused(kc, "%sandbox download /tmp/m model.bin", "cannot download onto")
        assert (project / "out").is_file() and (project / "model.bin" / "x").is_file()
