"""The AgentKernel Sandbox kernel, started for real through jupyter_client, on each engine.

Cells run in IPython inside the sandbox; what they are expected to give is what the local
``python3`` kernel (ipykernel + IPython) gives for the same cells.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from helpers.engines import TEST_RUNTIME, busybox_image
from helpers.kernels import (
    execute,
    interrupt_running,
    kernel_containers,
    plain,
    running_kernel,
    wait_for_iopub,
    wait_until,
)
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from agentkernel.engine import Engine

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _kernelspec(kernelspec: None) -> None:
    """Every test here needs the kernelspec, also those that start their own kernel."""


# -- cells ---------------------------------------------------------------------------------------
def test_state_result_and_underscore(kc: BlockingKernelClient) -> None:
    assert execute(kc, "x = 20").status == "ok"
    run = execute(kc, "x + 22")
    assert run.result == {"text/plain": "42"}
    assert execute(kc, "_ * 2").result == {"text/plain": "84"}
    assert execute(kc, "x = 1; None").result is None


def test_runs_inside_the_container(kc: BlockingKernelClient) -> None:
    run = execute(kc, "import os, socket; print(os.path.exists('/.dockerenv') or "
                      "os.path.exists('/run/.containerenv'), socket.gethostname())")
    inside, hostname = run.stream().split()
    assert inside == "True" and hostname != socket.gethostname()


def test_output_streams_live_and_in_order(kc: BlockingKernelClient) -> None:
    run = execute(kc, "import sys, time, os, subprocess\nprint('one', flush=True)\n"
                      "time.sleep(1.5)\nos.system('echo two')\n"
                      "subprocess.run(['sh', '-c', 'echo three >&2'])\nprint('four')")
    assert run.stream() == "one\ntwo\nfour\n"
    assert run.stream("stderr") == "three\n"
    first = run.stamps[0]
    assert run.stamps[-1] - first > 1.0, "the first line must arrive before the cell ends"


def test_error_shows_user_lines_only(kc: BlockingKernelClient) -> None:
    run = execute(kc, "def f():\n    return 1 / 0\n\nf()")
    assert run.status == "error"
    errors = run.of("error")
    assert len(errors) == 1 and errors[0]["ename"] == "ZeroDivisionError"
    text = plain(errors[0]["traceback"])
    assert "Cell In[" in text and "return 1 / 0" in text and "runner" not in text.lower()
    assert run.reply["content"]["ename"] == "ZeroDivisionError"
    assert execute(kc, "1 +").error["ename"] == "SyntaxError"


def test_rich_output(kc: BlockingKernelClient) -> None:
    code = '''
class Rich:
    def _repr_html_(self): return "<b>bold</b>"
    def _repr_markdown_(self): return "**md**"
    def _repr_svg_(self): return "<svg xmlns='http://www.w3.org/2000/svg'/>"
    def _repr_png_(self): return b"\\x89PNG fake"
    def _repr_latex_(self): return "$x^2$"
    def _repr_json_(self): return {"a": 1}
class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": "<i>b</i>", "text/plain": "B"}
display(Rich())
Bundle()
'''
    run = execute(kc, code)
    shown = run.displays[0]
    assert shown["text/html"] == "<b>bold</b>" and shown["text/markdown"] == "**md**"
    assert shown["image/svg+xml"].startswith("<svg") and shown["text/latex"] == "$x^2$"
    assert shown["application/json"] == {"a": 1} and shown["image/png"]
    assert run.result["text/html"] == "<i>b</i>"


def test_matplotlib_png(kc: BlockingKernelClient) -> None:
    run = execute(kc, "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
                      "plt.title('t')")
    assert run.result == {"text/plain": "Text(0.5, 1.0, 't')"}
    pngs = [d for d in run.displays if "image/png" in d]
    assert len(pngs) == 1
    import base64

    assert base64.b64decode(pngs[0]["image/png"])[:4] == b"\x89PNG"
    assert execute(kc, "import matplotlib.pyplot as plt; len(plt.get_fignums())").result == {
        "text/plain": "0"}


def test_input_round_trip(kc: BlockingKernelClient) -> None:
    prompts = []

    def answer(msg: dict) -> None:
        prompts.append(msg["content"])
        kc.input("sandbox user" if not msg["content"]["password"] else "s3cret")

    code = ("import getpass\nname = input('who? ')\npw = getpass.getpass('pw: ')\n"
            "print(name, len(pw))")
    run = execute(kc, code, allow_stdin=True, stdin_hook=answer)
    assert [p["prompt"] for p in prompts] == ["who? ", "pw: "]
    assert [p["password"] for p in prompts] == [False, True]
    assert run.stream() == "sandbox user 6\n"


def test_interrupt_sleeping_cell(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    km, kc = kernel
    execute(kc, "kept = 'yes'")
    msg_id = kc.execute("import time; time.sleep(1000)")
    time.sleep(1.0)
    interrupt_running(km, kc, msg_id)
    assert execute(kc, "kept").result == {"text/plain": "'yes'"}


def test_shell_lines_and_cells(kc: BlockingKernelClient) -> None:
    # ``!`` runs in a pty, as IPython runs it: stderr joins stdout, lines end in \r\n
    assert execute(kc, "!echo from-shell; echo err >&2").stream() == "from-shell\r\nerr\r\n"
    run = execute(kc, "%%sh\nfor i in 1 2; do echo line$i; done\nuname -s")
    assert run.stream() == "line1\nline2\nLinux\n"
    assert execute(kc, "%%bash\necho $BASH_VERSION | cut -c1").stream().strip().isdigit()


def test_completion_and_inspection(kc: BlockingKernelClient) -> None:
    execute(kc, "import json\nsandbox_value = 3")

    def complete(code: str, cursor_pos: int | None = None) -> dict:
        kc.complete(code, cursor_pos)
        return kc.get_shell_msg(timeout=30)["content"]

    # Jedi's first completion in a fresh sandbox can outlast the kernel's 5 s wait under load
    wait_until(lambda: complete("sandbox_v")["matches"], 60, "a first completion")
    reply = complete("sandbox_v")
    assert reply["matches"] == ["sandbox_value"] and reply["cursor_start"] == 0
    reply = complete("json.du", 7)  # as ipykernel answers: attribute names from the dot
    assert reply["matches"] == ["dump", "dumps"] and reply["cursor_start"] == 5
    kc.inspect("json.dumps", 10)
    reply = kc.get_shell_msg(timeout=30)["content"]
    assert reply["found"] and "Serialize" in reply["data"]["text/plain"]
    kc.is_complete("for i in range(3):")
    reply = kc.get_shell_msg(timeout=30)["content"]
    assert reply["status"] == "incomplete" and reply["indent"] == "    "


SLOW_DIR = """
import time
class SlowDir:
    def __dir__(self):
        while True:  # a completion of ``slow.`` waits here (an interrupt stops it)
            time.sleep(0.05)
slow = SlowDir()
"""


def reply_to(kc: BlockingKernelClient, channel: str, msg: dict, timeout: float) -> dict:
    """The reply to ``msg`` on ``channel`` ("shell" or "control"), others skipped."""
    get = kc.get_shell_msg if channel == "shell" else kc.get_control_msg
    deadline = time.monotonic() + timeout
    while True:
        reply = get(timeout=max(0.01, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply


def test_a_waiting_completion_leaves_the_kernel_answering(
        kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    """While a completion waits on the sandbox (on a worker thread, not on the event loop):
    kernel_info on the control channel is answered at once, a frontend's comm message is
    handled at once where ipykernel dispatches comms beside a running request (ipykernel 7),
    and an interrupt stops the completion, which is still answered (empty)."""
    import ipykernel

    km, kc = kernel
    assert execute(kc, SLOW_DIR + "\n" + COMM_ECHO).status == "ok"
    complete = kc.session.msg("complete_request", {"code": "slow.", "cursor_pos": 5})
    kc.shell_channel.send(complete)
    time.sleep(1.0)  # the completion is waiting on the sandbox's __dir__ by now
    info = kc.session.msg("kernel_info_request", {})
    sent = time.monotonic()
    kc.control_channel.send(info)
    assert reply_to(kc, "control", info, 10)["content"]["status"] == "ok"
    took_info = time.monotonic() - sent
    assert took_info < 1.0, f"kernel_info on control took {took_info:.2f} s"
    if ipykernel.version_info >= (7,):
        echoed = comm_echo(kc, {"x": 1}, timeout=3)
        assert echoed["content"]["data"] == {"echo": {"x": 1}}
    assert not kc.shell_channel.msg_ready(), "the completion should still be waiting by now"
    sent = time.monotonic()
    km.interrupt_kernel()
    reply = reply_to(kc, "shell", complete, 10)["content"]
    took = time.monotonic() - sent
    assert reply["status"] == "ok" and reply["matches"] == [], reply
    assert took < 2.0, f"the interrupted completion was answered after {took:.2f} s"
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}
    assert execute(kc, "del slow").status == "ok"


COMM_ECHO = """
from comm import get_comm_manager
def opened(comm, msg):
    comm.on_msg(lambda m: comm.send({'echo': m['content']['data']}))
get_comm_manager().register_target('echo.waiting', opened)
"""


def comm_echo(kc: BlockingKernelClient, data: dict, timeout: float) -> dict:
    """Open a comm to COMM_ECHO's target, send it ``data``; its echo (iopub comm_msg)."""
    comm_id = f"waiting-{time.monotonic_ns()}"
    kc.shell_channel.send(kc.session.msg("comm_open", {
        "comm_id": comm_id, "target_name": "echo.waiting", "data": {}}))
    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data}))
    return wait_for_iopub(kc, "comm_msg", timeout=timeout)


def test_ipython_in_the_sandbox(kc: BlockingKernelClient) -> None:
    run = execute(kc, "%who_ls")
    assert run.status == "ok"
    run = execute(kc, "from IPython.display import HTML, Markdown\ndisplay(Markdown('**m**'))\n"
                      "HTML('<i>h</i>')")
    assert run.displays[0]["text/markdown"] == "**m**" and run.result["text/html"] == "<i>h</i>"
    run = execute(kc, "zip?")
    (page,) = run.reply["content"]["payload"]
    assert page["source"] == "page" and "zip(*iterables" in plain([page["data"]["text/plain"]])
    run = execute(kc, "ue = 4", user_expressions={"sq": "ue ** 2"})
    assert run.reply["content"]["user_expressions"]["sq"]["data"] == {"text/plain": "16"}
    # %pip runs the sandbox's python (the test image has no pip), never the host's
    pip = execute(kc, "%pip --version").stream()
    assert pip.startswith("/usr/bin/python3: No module named pip"), pip
    run = execute(kc, "input('q')", allow_stdin=False)
    assert run.error["ename"] == "StdinNotImplementedError"
    count = execute(kc, "1").reply["content"]["execution_count"]
    code = f"In[-1], Out[{count}]"
    assert execute(kc, code).result == {"text/plain": f"({code!r}, 1)"}


def test_comms_both_ways(kc: BlockingKernelClient) -> None:
    run = execute(kc, "from comm import create_comm, get_comm_manager\n"
                      "def opened(comm, msg):\n"
                      "    comm.on_msg(lambda m: comm.send({'echo': m['content']['data']},"
                      " buffers=[b'\\x01\\x02']))\n"
                      "get_comm_manager().register_target('echo.target', opened)\n"
                      "c = create_comm(target_name='from.sandbox', data={'a': 1})")
    (opened,) = run.of("comm_open")
    assert (opened["target_name"], opened["data"]) == ("from.sandbox", {"a": 1})
    comm_id = "frontend-comm-1"
    kc.shell_channel.send(kc.session.msg("comm_open", {
        "comm_id": comm_id, "target_name": "echo.target", "data": {}}))
    message = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"x": 1}})
    kc.session.send(kc.shell_channel.socket, message, buffers=[b"ab"])
    echo = wait_for_iopub(kc, "comm_msg")
    assert echo["content"] == {"comm_id": comm_id, "data": {"echo": {"x": 1}}}
    assert [bytes(b) for b in echo["buffers"]] == [b"\x01\x02"]
    assert echo["parent_header"]["msg_id"] == message["header"]["msg_id"]
    kc.comm_info("echo.target")
    info = kc.get_shell_msg(timeout=30)["content"]
    assert info["comms"] == {comm_id: {"target_name": "echo.target"}}


def test_language_info_is_the_image_python(kc: BlockingKernelClient) -> None:
    kc.kernel_info()
    reply = kc.get_shell_msg(timeout=30)["content"]
    info = reply["language_info"]
    # the cells run in the sandbox: no debugger to offer (the kernelspec says so too)
    assert "debugger" not in reply["supported_features"], reply
    assert reply["implementation"] == "agentkernel" and reply["protocol_version"].startswith("5.")
    inside = execute(kc, "import platform; platform.python_version()").result["text/plain"]
    assert info["name"] == "python" and info["version"] == inside.strip("'")
    assert info["file_extension"] == ".py" and info["nbconvert_exporter"] == "python"
    assert info["mimetype"] == "text/x-python" and info["codemirror_mode"]["name"] == "ipython"


def test_the_heartbeat_beats(kc: BlockingKernelClient) -> None:
    """ipykernel's heartbeat answers, bound through the port held since the process started
    (agentkernel_kernel/early_listen.py)."""
    wait_until(kc.hb_channel.is_beating, 10, "the heartbeat beating")


# -- magics --------------------------------------------------------------------------------------
def test_magics_lifecycle(kc: BlockingKernelClient, tmp_path: Path) -> None:
    run = execute(kc, "%sandbox start --cpus 1 --memory 300 -p 8000 -e GREETING=hi")
    assert run.status == "ok" and "running" in run.stream()
    assert execute(kc, "import os; os.environ['GREETING']").result == {"text/plain": "'hi'"}
    status = execute(kc, "%sandbox status").stream()
    assert "cpus 1" in status and "memory 300 MB" in status and "-> 8000/tcp" in status
    assert "127.0.0.1:" in execute(kc, "%sandbox ports").stream()
    run = execute(kc, "%sandbox resize 2 600")
    if TEST_RUNTIME == "runsc":  # gVisor cannot change a running sandbox's limits: one line
        assert run.status == "error" and run.error["evalue"].count("\n") == 0
        assert "runtime 'runsc' cannot change a running sandbox's limits" in run.error["evalue"]
        assert "cpus 1, memory 300 MB" in execute(kc, "%sandbox status").stream()
    else:
        assert run.status == "ok" and "verified" in run.stream()
        assert "cpus 2, memory 600 MB" in execute(kc, "%sandbox status").stream()
    run = execute(kc, "%%sandbox_file /work/app/hello.py --mode 0755\nprint('hi from file')\n")
    assert run.status == "ok"
    assert execute(kc, "!python3 /work/app/hello.py").stream() == "hi from file\r\n"
    run = execute(kc, "%%sandbox_file /work/app/hello.py --append\nprint('again')\n")
    assert run.status == "ok"
    mode = "oct(os.stat('/work/app/hello.py').st_mode & 0o777)"  # gVisor 2022 lacks statx
    assert execute(kc, mode).result == {"text/plain": "'0o755'"}, "append keeps mode"
    assert execute(kc, "%%sandbox --sh\necho $0 | grep -c sh").stream() == "1\n"
    assert execute(kc, "open('/work/app/hello.py').read().count('print')").result == {
        "text/plain": "2"}
    local = tmp_path / "data.txt"
    local.write_text("payload")
    assert execute(kc, f"%sandbox upload {local} /work/in/data.txt").status == "ok"
    assert execute(kc, "open('/work/in/data.txt').read()").result == {"text/plain": "'payload'"}
    assert execute(kc, f"%sandbox download /work/in/data.txt {tmp_path}/back.txt").status == "ok"
    assert (tmp_path / "back.txt").read_text() == "payload"
    assert "--cpus" in execute(kc, "%sandbox start --help").stream()


@pytest.mark.parametrize(
    "code, fragment",
    [
        ("%sandbox resize two 1024", "two"),
        ("%sandbox start -p notaport", "invalid port spec 'notaport'"),
        ("%sandbox frobnicate", "unknown subcommand 'frobnicate'"),
        ("%%sandbox_file\nbody", "PATH"),
        ("%sandbox start --image agentkernel-no-such-image:0", "not available locally"),
        ("%sandbox start --cpus 4096", "CPUs"),
        ("%sandbox upload no/such/file /tmp/x", "No such file on the host"),
        ("%sandbox download /etc/../etc/passwd /tmp/x", "must not contain '..'"),
        ("%%sandbox_file /proc/self/x\ny", "/proc is off limits"),
        ("%sandbox push x", "%load_ext agentkernel"),
    ],
)
def test_malformed_magics_are_one_line(kc: BlockingKernelClient, code: str, fragment: str) -> None:
    run = execute(kc, code)
    assert run.status == "error"
    errors = run.of("error")
    assert len(errors) == 1 and fragment in errors[0]["evalue"]
    assert len(errors[0]["traceback"]) == 1 and "\n" not in errors[0]["evalue"]
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}, "kernel must stay usable"


def test_image_without_python(kc: BlockingKernelClient, engine: Engine, tmp_path: Path) -> None:
    image = "agentkernel-test-nopython:latest"
    busybox_image(engine, image)
    run = execute(kc, f"%sandbox start --image {image}")
    assert run.status == "error"
    assert "has no python3" in run.error["evalue"] and "python:3.12-slim" in run.error["evalue"]
    assert execute(kc, "%sandbox restart").status == "ok"
    assert execute(kc, "2 * 3").result == {"text/plain": "6"}


# -- lifetime ------------------------------------------------------------------------------------
def test_shutdown_and_restart_remove_the_container(engine_name: str, engine: Engine,
                                                   test_image: str) -> None:
    with running_kernel() as (km, kc):
        assert execute(kc, "1").status == "ok"
        first = kernel_containers(engine, km)
        assert len(first) == 1
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=120)
        assert execute(kc, "2").status == "ok"
        wait_until(lambda: first[0]["Id"] not in {c["Id"] for c in engine.api.containers()}, 15)
        second = kernel_containers(engine, km)
        assert len(second) == 1 and second[0]["Id"] != first[0]["Id"]
        pid = km.provisioner.process.pid
    wait_until(lambda: not kernel_containers(engine, pid, running_only=False), 15)


def test_sigkill_leaves_no_container(engine_name: str, engine: Engine, test_image: str) -> None:
    with running_kernel() as (km, kc):
        assert execute(kc, "import time").status == "ok"
        assert len(kernel_containers(engine, km)) == 1
        kc.execute("time.sleep(1000)")
        time.sleep(0.5)
        pid = km.provisioner.process.pid
        os.kill(pid, signal.SIGKILL)
        took = wait_until(lambda: not kernel_containers(engine, pid), 15)
    print(f"container gone {took:.2f} s after SIGKILL ({engine_name})")


def test_dead_container_then_restart(engine_name: str, engine: Engine, test_image: str) -> None:
    with running_kernel() as (km, kc):
        assert execute(kc, "x = 1").status == "ok"
        engine.api.kill(kernel_containers(engine, km)[0]["Id"])
        started = time.monotonic()
        run = execute(kc, "x", timeout=30)
        assert time.monotonic() - started < 5
        assert run.status == "error" and "sandbox stopped" in run.error["evalue"]
        assert "%sandbox restart" in run.error["evalue"]
        again = execute(kc, "x")
        assert again.status == "error" and "%sandbox restart" in again.error["evalue"]
        assert execute(kc, "%sandbox restart").status == "ok"
        assert execute(kc, "y = 2; y").result == {"text/plain": "2"}


def test_out_of_memory_message_and_recovery(engine_name: str, engine: Engine,
                                            test_image: str) -> None:
    with running_kernel() as (km, kc):
        assert execute(kc, "%sandbox start --memory 200").status == "ok"
        started = time.monotonic()
        run = execute(kc, "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))",
                      timeout=60)
        assert run.status == "error"
        assert "out of memory (limit 200 MB)" in run.error["evalue"], run.error
        assert time.monotonic() - started < 30
        assert execute(kc, "%sandbox restart").status == "ok"
        assert execute(kc, "'alive'").result == {"text/plain": "'alive'"}
