"""The IPython extension (``%load_ext agentkernel``) on each engine.

Three hosts: an in-process ``InteractiveShell``, the standard ``python3`` ipykernel driven through
jupyter_client, and terminal IPython as a subprocess. Also the restricted unpickler that
``%sandbox pull`` relies on, which needs no engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.engines import labelled
from helpers.kernels import execute, interrupt_running, kernel_containers, plain, wait_until
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from agentkernel.engine import Engine
from agentkernel.extension import SandboxMagics, SandboxResult

# -- an in-process InteractiveShell --------------------------------------------------------------


@pytest.fixture(scope="module")
def shell(engine_name: str, test_image: str) -> Iterator[InteractiveShell]:
    """The process's InteractiveShell with the extension loaded, unloaded afterwards.

    The sandbox starts here, before any test, so no_leftovers keeps it for the module.
    """
    ipython = InteractiveShell.instance()
    assert run_cell(ipython, "%load_ext agentkernel")[0].success
    result, out = run_cell(ipython, "%sandbox start")
    assert result.success and " running: " in out.stdout
    yield ipython
    if "agentkernel" in ipython.extension_manager.loaded:
        run_cell(ipython, "%unload_ext agentkernel")


def run_cell(shell: InteractiveShell, code: str) -> tuple[ExecutionResult, CapturedIO]:
    """Run a cell as a user would, capturing what it printed and displayed."""
    with capture_output() as captured:
        result = shell.run_cell(code, store_history=True)
    return result, captured


def magics_of(shell: InteractiveShell) -> SandboxMagics:
    return shell.magics_manager.registry["SandboxMagics"]


def failed_with(result: ExecutionResult, ename: str) -> BaseException:
    """The error of a failed cell, checked to carry the name ``ename``."""
    assert not result.success
    error = result.error_in_exec
    assert type(error).__name__ == ename, error
    return error


@pytest.mark.engine
def test_cells_run_in_the_sandbox_and_keep_state(shell: InteractiveShell) -> None:
    result, out = run_cell(shell, "%%sandbox\nimport socket\nsecret = 41\nprint('inside', "
                             "socket.gethostname())\nsecret + 1")
    assert result.success and out.stdout.startswith("inside ")
    assert out.stdout.split()[1] != os.uname().nodename
    assert isinstance(result.result, SandboxResult) and result.result.data["text/plain"] == "42"
    assert "Out[" in out.stdout and "secret" not in shell.user_ns
    result, out = run_cell(shell, "%%sandbox\nsecret * 2")
    assert repr(result.result) == "82"
    result, _ = run_cell(shell, "%%sandbox\nsecret = 0;")
    assert result.success and result.result is None


@pytest.mark.engine
def test_rich_output(shell: InteractiveShell) -> None:
    code = ("%%sandbox\nclass Rich:\n    def _repr_html_(self): return '<b>bold</b>'\n"
            "display(Rich())\nprint('between')\nRich()")
    result, out = run_cell(shell, code)
    assert [o.data["text/html"] for o in out.outputs] == ["<b>bold</b>"]
    assert result.result.data["text/html"] == "<b>bold</b>" and "between" in out.stdout


@pytest.mark.engine
def test_errors_show_the_user_lines(shell: InteractiveShell) -> None:
    result, out = run_cell(shell, "%%sandbox\ndef f():\n    return 1 / 0\n\nf()")
    error = failed_with(result, "ZeroDivisionError")
    assert str(error) == "division by zero"
    text = plain([out.stdout])  # IPython's traceback, from the sandbox's IPython
    assert "return 1 / 0" in text and "ZeroDivisionError" in text and "Cell In[" in text
    assert "agentkernel" not in text and "extension.py" not in text
    assert run_cell(shell, "%%sandbox\n1 +")[0].error_in_exec.__class__.__name__ == "SyntaxError"


@pytest.mark.parametrize(
    "code, ename, fragment",
    [
        ("%sandbox frobnicate", "CommandError", "unknown subcommand 'frobnicate'"),
        ("%sandbox_exec", "CommandError", "missing CMD"),
        ("%%sandbox_file\nbody", "CommandError", "PATH"),
        ("%%sandbox --bash\n1", "CommandError", "--bash"),
        ("%sandbox_exec exit 3", "SandboxError", "command exited with code 3"),
        ("%sandbox upload no/such/file /tmp/x", "SandboxNotFound", "No such file on the host"),
        ("%%sandbox_file /proc/self/x\ny", "PathRefused", "/proc is off limits"),
    ],
)
def test_magic_errors_are_one_line(shell: InteractiveShell, code: str, ename: str,
                                   fragment: str) -> None:
    result, out = run_cell(shell, code)
    error = failed_with(result, ename)
    assert fragment in str(error)
    assert len(out.stdout.strip().splitlines()) == 1 and fragment in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.engine
def test_help(shell: InteractiveShell) -> None:
    result, out = run_cell(shell, "%sandbox")
    assert result.success and "%%sandbox [--sh]" in out.stdout
    assert "--cpus" in run_cell(shell, "%sandbox start --help")[1].stdout


@pytest.mark.engine
def test_push_and_pull_round_trip(shell: InteractiveShell) -> None:
    shell.user_ns.update(config={"name": "run", "sizes": [1, 2]}, items=[3, "four", 5.0])
    result, out = run_cell(shell, "%sandbox push config items")
    assert result.success and out.stdout == "pushed config, items\n"
    run_cell(shell, "%%sandbox\nconfig['sizes'].append(3)\nitems.reverse()\n"
                    "fresh = {'n': len(items)}")
    del shell.user_ns["items"]
    result, out = run_cell(shell, "%sandbox pull config items fresh")
    assert result.success and out.stdout == "pulled config, items, fresh\n"
    assert shell.user_ns["config"] == {"name": "run", "sizes": [1, 2, 3]}
    assert shell.user_ns["items"] == [5.0, "four", 3] and shell.user_ns["fresh"] == {"n": 3}


@pytest.mark.engine
def test_push_and_pull_errors(shell: InteractiveShell) -> None:
    run_cell(shell, "square = lambda x: x * x")
    with open(__file__) as handle:
        shell.user_ns["handle"] = handle
        for name, why in (("square", "lambda"), ("handle", "TextIOWrapper")):
            error = failed_with(run_cell(shell, f"%sandbox push {name}")[0], "ConfigError")
            assert f"{name!r} cannot be copied" in str(error) and why in str(error)
    error = failed_with(run_cell(shell, "%sandbox push no_such_name")[0], "ConfigError")
    assert "no variable 'no_such_name'" in str(error)
    error = failed_with(run_cell(shell, "%sandbox pull no_such_name")[0], "SandboxError")
    assert "'no_such_name' is not defined" in str(error)


@pytest.mark.engine
def test_pull_refuses_what_could_run_code_on_the_host(shell: InteractiveShell,
                                                      tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    run_cell(shell, f"%%sandbox\nimport os\nclass Point:\n    pass\nclass Evil:\n"
               f"    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\n"
               "point, evil = Point(), Evil()")
    for name, named in (("point", "__main__.Point"), ("evil", "posix.system")):
        result, out = run_cell(shell, f"%sandbox pull {name}")
        error = failed_with(result, "SandboxError")
        assert f"{named} is not allowed to come back from the sandbox" in str(error)
        assert len(out.stdout.strip().splitlines()) == 1 and name not in shell.user_ns
    assert not marker.exists()


@pytest.mark.engine
def test_max_transfer_mb_is_configurable(shell: InteractiveShell) -> None:
    shell.user_ns["blob"] = b"x" * (2 * 1024 * 1024)
    assert run_cell(shell, "%config SandboxMagics.max_transfer_mb = 1")[0].success
    try:
        error = failed_with(run_cell(shell, "%sandbox push blob")[0], "ConfigError")
        assert "over the 1 MB limit (SandboxMagics.max_transfer_mb)" in str(error)
    finally:
        run_cell(shell, "%config SandboxMagics.max_transfer_mb = 64")
    assert run_cell(shell, "%sandbox push blob")[0].success


@pytest.mark.engine
def test_files_exec_and_shell_cells(shell: InteractiveShell, tmp_path: Path) -> None:
    result, out = run_cell(shell, "%%sandbox_file /tmp/ext/hello.sh --mode 0755\necho hello $1\n")
    assert result.success and "/tmp/ext/hello.sh" in out.stdout
    run_cell(shell, "%%sandbox_file /tmp/ext/hello.sh --append --mode 755\necho again >&2\n")
    result, out = run_cell(shell, "%sandbox_exec /tmp/ext/hello.sh world")
    assert result.success and out.stdout == "hello world\n" and out.stderr == "again\n"
    result, out = run_cell(shell, "%%sandbox --sh\nfor i in 1 2; do echo line$i; done\nuname -s")
    assert result.success and out.stdout == "line1\nline2\nLinux\n"
    failed_with(run_cell(shell, "%%sandbox --sh\nexit 4")[0], "CalledProcessError")
    local = tmp_path / "data.txt"
    local.write_text("payload")
    assert run_cell(shell, f"%sandbox upload {local} /tmp/ext/data.txt")[0].success
    assert run_cell(shell, f"%sandbox download /tmp/ext/data.txt {tmp_path}/back.txt")[0].success
    assert (tmp_path / "back.txt").read_text() == "payload"


@pytest.mark.engine
def test_unload_removes_the_container(shell: InteractiveShell, engine: Engine) -> None:
    run_cell(shell, "%%sandbox\n1")
    name = magics_of(shell).manager.sandbox.name
    assert labelled(engine, name)
    assert run_cell(shell, "%unload_ext agentkernel")[0].success
    assert not labelled(engine, name)
    assert failed_with(run_cell(shell, "%sandbox status")[0], "UsageError")
    assert run_cell(shell, "%load_ext agentkernel")[0].success
    assert repr(run_cell(shell, "%%sandbox\n'fresh'")[0].result) == "'fresh'"


# -- the standard python3 ipykernel --------------------------------------------------------------


@contextmanager
def python_kernel() -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """A real ipykernel (kernelspec ``python3``) with the extension loaded."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=dict(os.environ))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        assert execute(kc, "%load_ext agentkernel").status == "ok"
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def ipykernel(engine_name: str,
              test_image: str) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    with python_kernel() as pair:
        yield pair


@pytest.mark.engine
def test_kernel_streams_output_live(ipykernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    run = execute(ipykernel[1], "%%sandbox\nimport time\nprint('one', flush=True)\n"
                                "time.sleep(1.5)\nprint('two')")
    assert run.status == "ok" and run.stream() == "one\ntwo\n"
    streams = [stamp for msg, stamp in zip(run.messages, run.stamps, strict=True)
               if msg["msg_type"] == "stream"]
    assert streams[-1] - streams[0] > 1.0, "the first line must arrive before the cell ends"


@pytest.mark.engine
def test_kernel_rich_output_and_errors(
        ipykernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    kc = ipykernel[1]
    run = execute(kc, "%%sandbox\n%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                      "plt.plot([1, 3, 2]);")
    pngs = [d["image/png"] for d in run.displays if "image/png" in d]
    assert len(pngs) == 1 and pngs[0].startswith("iVBOR")  # base64 of the PNG signature
    assert execute(kc, "%%sandbox\n6 * 7").result["text/plain"] == "42"
    run = execute(kc, "%%sandbox\ndef f():\n    return 1 / 0\nf()")
    assert run.status == "error" and run.reply["content"]["ename"] == "ZeroDivisionError"
    assert run.error["ename"] == "ZeroDivisionError"
    assert "return 1 / 0" in plain(run.error["traceback"])
    run = execute(kc, "%sandbox frobnicate")
    assert run.status == "error" and len(run.error["traceback"]) == 1
    assert "unknown subcommand" in run.error["evalue"]


@pytest.mark.engine
def test_kernel_input(ipykernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    kc = ipykernel[1]
    prompts = []

    def answer(msg: dict) -> None:
        prompts.append(msg["content"]["prompt"])
        kc.input("sandbox user")

    run = execute(kc, "%%sandbox\nprint(input('who? '))", allow_stdin=True, stdin_hook=answer)
    assert prompts == ["who? "] and run.stream() == "sandbox user\n"
    run = execute(kc, "%%sandbox\ntry:\n    input()\nexcept EOFError:\n    print('no input')",
                  allow_stdin=False)
    assert run.stream() == "no input\n" and run.stream("stderr") == ""


@pytest.mark.engine
def test_kernel_interrupt_stops_the_sandbox_cell(
        ipykernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    km, kc = ipykernel
    assert execute(kc, "%%sandbox\nkept = 'yes'").status == "ok"
    msg_id = kc.execute("%%sandbox\nimport time\nprint('sleeping', flush=True)\ntime.sleep(1000)")
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["msg_type"] == "stream" and "sleeping" in msg["content"]["text"]:
            break
    interrupt_running(km, kc, msg_id)
    assert execute(kc, "%%sandbox\nkept").result == {"text/plain": "'yes'"}


@pytest.mark.engine
def test_kernel_shutdown_removes_the_container(engine: Engine, test_image: str) -> None:
    with python_kernel() as (km, kc):
        assert execute(kc, "%%sandbox\n1").status == "ok"
        assert len(kernel_containers(engine, km)) == 1
        pid = km.provisioner.process.pid
    wait_until(lambda: not kernel_containers(engine, pid, running_only=False), 15)


# -- terminal IPython ----------------------------------------------------------------------------


@pytest.mark.engine
def test_terminal_ipython(engine: Engine, test_image: str, tmp_path: Path) -> None:
    profile = tmp_path / "profile_default"
    profile.mkdir()
    (profile / "ipython_config.py").write_text(
        "c.SandboxConfig.env = {'GREETING': 'from-config'}\n"
    )
    ipython = Path(sys.executable).with_name("ipython")
    proc = subprocess.Popen(
        [str(ipython), "--no-banner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "IPYTHONDIR": str(tmp_path)},
    )
    out, err = proc.communicate(
        "%load_ext agentkernel\n%sandbox_exec echo hi $GREETING\nexit\n", timeout=120
    )
    assert proc.returncode == 0, err
    assert "hi from-config" in out
    wait_until(lambda: not kernel_containers(engine, proc.pid, running_only=False), 15)
