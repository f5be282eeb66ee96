"""Fast tests of the runner and the host session, with the runner as a local subprocess.

The runner runs cells in IPython as ipykernel does; expected values come from the local
``python3`` kernel (ipykernel + IPython) given the same cells.
"""

from __future__ import annotations

import _thread
import ast
import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import IPython
import pytest
from helpers.runner import TIMEOUT, Cell
from hypothesis import given, settings
from hypothesis import strategies as st
from ipykernel import compiler as ipykernel_compiler

from agentkernel.errors import RunnerError, RunnerGone, RunnerUnsupported
from agentkernel.runner import ipython_path
from agentkernel.runner.protocol import MAX_FRAME, FrameDecoder, ProtocolError, encode_frame
from agentkernel.runner.shell import HASH_SEED, murmur2_x86
from agentkernel.runner_client import (
    LocalProcessTransport,
    RunnerSession,
    runner_main_command,
    runner_source,
)
from agentkernel.sandbox import ipython8
from agentkernel.sandbox.bundle import IPYTHON8_SITE, MANIFEST, SITE, host_bundle

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(lines: list[str]) -> str:
    """Traceback or pager lines without IPython's colours."""
    return ANSI.sub("", "\n".join(lines))


def new_session(**kwargs) -> RunnerSession:
    session = RunnerSession(LocalProcessTransport(), **kwargs)
    session.wait_ready(TIMEOUT)
    return session


@pytest.fixture(scope="module")
def session():
    """One runner shared by the tests that leave it usable (names are unique per test)."""
    with new_session() as shared:
        yield shared


@pytest.fixture
def fresh():
    """A runner of the test's own, for tests that interrupt or kill it."""
    with new_session() as own:
        yield own


# --- codec ---------------------------------------------------------------------------------


def test_encode_frame_is_length_prefixed_utf8_json():
    frame = encode_frame({"type": "stream", "text": "é\x00"})
    body = frame[4:]
    assert int.from_bytes(frame[:4], "big") == len(body)
    assert json.loads(body.decode("utf-8")) == {"type": "stream", "text": "é\x00"}
    assert "é".encode() in body  # not \u escaped


def test_encode_frame_escapes_lone_surrogates():
    (frame,) = FrameDecoder().feed(encode_frame({"type": "x", "text": "a\udc80b"}))
    assert frame["text"] == "a\udc80b"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ((MAX_FRAME + 1).to_bytes(4, "big"), "exceeds"),
        (b"\x00\x00\x00\x02\xff\xfe", "UTF-8"),
        (b"\x00\x00\x00\x03{x}", "JSON"),
        (b"\x00\x00\x00\x02[]", '"type"'),
        (b'\x00\x00\x00\x0b{"type": 1}', '"type"'),
    ],
)
def test_decoder_rejects_bad_frames_with_one_line(data, message):
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match=message) as caught:
        decoder.feed(data)
    assert "\n" not in str(caught.value)
    with pytest.raises(ProtocolError):  # a broken stream stays broken
        decoder.feed(encode_frame({"type": "ok"}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)
frames = st.builds(
    lambda kind, rest: {**rest, "type": kind},
    st.text(),
    st.dictionaries(st.text(), json_values, max_size=5),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=100, deadline=None)
@given(st.lists(frames, max_size=4), st.lists(st.integers(min_value=0), max_size=10))
def test_decoder_round_trips_any_chunking(objects, cuts):
    data = b"".join(encode_frame(obj) for obj in objects)
    decoder = FrameDecoder()
    decoded = [frame for chunk in chunked(data, cuts) for frame in decoder.feed(chunk)]
    assert decoded == objects


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=6))
def test_decoder_raises_only_protocol_error_on_garbage(data, cuts):
    decoder = FrameDecoder()
    try:
        for chunk in chunked(data, cuts):
            for frame in decoder.feed(chunk):
                assert isinstance(frame["type"], str)
    except ProtocolError:
        pass


# --- the runner source ---------------------------------------------------------------------


def test_runner_source_fits_one_argument_and_python_38_syntax():
    source = runner_source()
    assert len(source.encode()) < 128 * 1024  # Linux limit for one argv string
    ast.parse(source, feature_version=(3, 8))
    for name in ("boot", "protocol", "pump", "ipython_path"):  # run before the version check
        ast.parse(resources.files("agentkernel.runner").joinpath(f"{name}.py").read_text(),
                  feature_version=(3, 8))


def test_ready_reports_the_environment(session):
    ready = session.wait_ready(1)
    assert ready["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert ready["implementation"] == sys.implementation.name
    assert (ready["ipython"], ready["ipython_from"]) == (IPython.__version__, "image")
    assert isinstance(ready["matplotlib"], bool)
    assert isinstance(ready["pid"], int)


def test_cells_are_named_as_ipykernel_names_them():
    for code in ("", "a", "ab", "abc", "abcd", "print('hello", "é ünïcode 😀\n" * 3):
        assert murmur2_x86(code, HASH_SEED) == ipykernel_compiler.murmur2_x86(
            code, ipykernel_compiler.get_tmp_hash_seed())


# --- execution -----------------------------------------------------------------------------


def test_state_persists_between_cells(session):
    assert Cell(session, "persist_a = 40\ndef persist_f(x):\n    return x + 2").status == "ok"
    assert Cell(session, "persist_f(persist_a)").result["data"]["text/plain"] == "42"


def test_last_expression_result_and_history_names(session):
    first = Cell(session, "hist_x = 6\nhist_x * 7")
    count = first.reply["execution_count"]
    assert first.result["execution_count"] == count
    assert first.result["data"] == {"text/plain": "42"}
    second = Cell(session, f"[_, _{count}, Out[{count}], In[{count}]]")
    assert second.result["data"]["text/plain"] == "[42, 42, 42, 'hist_x = 6\\nhist_x * 7']"
    assert second.reply["execution_count"] == count + 1
    assert Cell(session, "__").result["data"]["text/plain"] == "42"
    assert Cell(session, "get_ipython().__class__.__name__").result["data"]["text/plain"] == (
        "'ZMQInteractiveShell'")


def test_no_result_for_none_semicolon_or_silent(session):
    assert Cell(session, "None").of("result") == []
    assert Cell(session, "1 + 1;  # hidden").of("result") == []
    before = Cell(session, "pass").reply["execution_count"]
    silent = Cell(session, "1 + 1", silent=True)
    assert silent.of("result") == []
    assert silent.reply["execution_count"] == before
    assert Cell(session, "2", store_history=False).reply["execution_count"] == before


def test_streams_keep_order_within_each_stream(session):
    cell = Cell(
        session,
        "import sys\nfor i in range(50):\n    print(i)\n    print(-i, file=sys.stderr)",
    )
    assert cell.text("stdout") == "".join(f"{i}\n" for i in range(50))
    assert cell.text("stderr") == "".join(f"{-i}\n" for i in range(50))
    assert all(event["id"] == cell.events[0]["id"] for event in cell.events)


def test_output_streams_while_the_cell_runs(session):
    cell = Cell(session, "import time\nprint('early')\ntime.sleep(0.5)\nprint('late')")
    assert cell.text() == "early\nlate\n"
    assert cell.done_at - cell.times[0] > 0.3


def test_output_of_subprocesses_is_captured(session):
    cell = Cell(
        session,
        "import os, subprocess\nos.system('echo from-system')\n"
        "subprocess.run(['echo', 'from-run'])\nsubprocess.run('echo err >&2', shell=True)",
    )
    assert cell.text() == "from-system\nfrom-run\n"
    assert cell.text("stderr") == "err\n"


def test_output_precedes_display_and_done(session):
    cell = Cell(session, "print('a')\ndisplay('b')\nprint('c', end='')")
    shape: list[list] = []
    for event in cell.events:  # a print may arrive in pieces: join adjacent stream text
        if shape and event["type"] == "stream" == shape[-1][0]:
            shape[-1][1] += event["text"]
        else:
            shape.append([event["type"], event.get("text", "")])
    assert shape == [["stream", "a\n"], ["display", ""], ["stream", "c"]]


def test_user_bytes_cannot_forge_frames(session):
    fake = b'\x00\x00\x00\x0f{"type":"done"}'
    cell = Cell(session, f"import os, sys\nos.write(1, {fake!r})\nsys.stdout.write('x')\n7")
    assert cell.status == "ok"
    assert cell.text() == fake.decode() + "x"
    assert cell.result["data"]["text/plain"] == "7"
    assert Cell(session, "8").result["data"]["text/plain"] == "8"


def test_odd_bytes_arrive_replaced_or_intact(session):
    cell = Cell(
        session,
        "import os\nos.write(1, b'bad:\\xff\\xfe nul:\\x00 esc:\\x1b[31mred\\x1b[0m\\n')\n"
        "e = 'é'.encode()\nos.write(1, e[:1])\nos.write(1, e[1:])\nos.write(1, e[:1])",
    )
    assert cell.text() == "bad:\ufffd\ufffd nul:\x00 esc:\x1b[31mred\x1b[0m\né\ufffd"
    assert Cell(session, "print('ok')").text() == "ok\n"


def test_error_is_ipythons_traceback_of_user_frames(session):
    Cell(session, "def err_inner():\n    raise ValueError('bad value')")
    cell = Cell(session, "x_err = 1\nerr_inner()")
    assert cell.status == "error"
    error = cell.error
    assert (error["ename"], error["evalue"]) == ("ValueError", "bad value")
    assert {k: cell.reply[k] for k in ("ename", "evalue")} == {"ename": "ValueError",
                                                              "evalue": "bad value"}
    text = plain(error["traceback"])
    assert "Cell In[" in text and "err_inner()" in text and "raise ValueError('bad value')" in text
    assert "agentkernel" not in text and "runner" not in text
    assert plain(error["traceback"][-1:]) == "ValueError: bad value"
    assert cell.reply["traceback"] == error["traceback"]


def test_error_keeps_frames_of_libraries_the_user_called(session):
    text = plain(Cell(session, "import json\njson.loads('{')").error["traceback"])
    assert "json" in text and "decoder.py" in text and "runner" not in text


def test_syntax_error_names_the_cell_as_ipykernel_does(session):
    error = Cell(session, "print('hello").error
    assert error["ename"] == "SyntaxError"
    # the local python3 kernel's evalue for this cell, to the letter
    assert error["evalue"] == ("unterminated string literal (detected at line 1) "
                               "(3259792019.py, line 1)")
    assert "print('hello" in plain(error["traceback"]) and "^" in plain(error["traceback"])


def test_system_exit_is_an_error_not_an_exit(session):
    cell = Cell(session, "import sys\nsys.exit(3)")
    assert (cell.error["ename"], cell.error["evalue"]) == ("SystemExit", "3")
    assert "To exit: use 'exit', 'quit', or Ctrl-D." in cell.text("stderr")
    assert Cell(session, "1").status == "ok"


def test_magics_and_pasted_prompts(session):
    cell = Cell(session, "%precision 3\nimport math\nmath.pi")
    assert cell.result["data"]["text/plain"] == "3.142"
    Cell(session, "%precision")
    assert "Wall time" in Cell(session, "%%time\nsum(range(10))").text()
    assert "loop" in Cell(session, "%timeit -n1 -r1 pass").text()
    assert Cell(session, ">>> 6 * 7").result["data"]["text/plain"] == "42"
    assert Cell(session, "In [1]: 6 * 8").result["data"]["text/plain"] == "48"
    cell = Cell(session, "%%capture captured\nprint('kept')\ndisplay('shown')")
    assert cell.events == []
    assert Cell(session, "captured.stdout").result["data"]["text/plain"] == "'kept\\n'"
    # not a magic in the sandbox (the kernel runs %sandbox on the host): as IPython says it
    cell = Cell(session, "get_ipython().run_line_magic('sandbox', 'status')")
    assert (cell.reply["status"], cell.reply["ename"]) == ("error", "UsageError")
    assert cell.text("stderr") == "UsageError: Line magic function `%sandbox` not found.\n"


def test_help_is_a_pager_payload(session):
    (page,) = Cell(session, "zip?").reply["payload"]
    assert page["source"] == "page" and "zip(*iterables" in plain([page["data"]["text/plain"]])
    Cell(session, "get_ipython().set_next_input('next one')")
    assert Cell(session, "get_ipython().set_next_input('x', replace=True)").reply["payload"] == [
        {"source": "set_next_input", "text": "x", "replace": True}]


def test_user_expressions(session):
    cell = Cell(session, "ue = 5", user_expressions={"double": "ue * 2", "bad": "1/0"})
    assert cell.reply["user_expressions"]["double"] == {
        "status": "ok", "data": {"text/plain": "10"}, "metadata": {}}
    assert cell.reply["user_expressions"]["bad"]["ename"] == "ZeroDivisionError"


# --- rich output ---------------------------------------------------------------------------

RICH = """
class Rich:
    def _repr_html_(self): return "<b>h</b>"
    def _repr_markdown_(self): return "*m*"
    def _repr_svg_(self): return "<svg/>"
    def _repr_png_(self): return b"\\x89PNG"
    def _repr_jpeg_(self): return (b"\\xff\\xd8", {"width": 3})
    def _repr_latex_(self): return "$x$"
    def _repr_json_(self): return {"a": [1]}
    def _repr_javascript_(self): return "alert(1)"
    def __repr__(self): return "Rich()"
"""


def test_display_collects_every_repr_kind(session):
    Cell(session, RICH)
    (shown,) = Cell(session, "display(Rich())").of("display")
    # what the local python3 kernel sends for the same object
    assert shown["data"] == {
        "text/plain": "Rich()",
        "text/html": "<b>h</b>",
        "text/markdown": "*m*",
        "image/svg+xml": "<svg/>",
        "image/png": "iVBORw==",
        "image/jpeg": "/9g=",
        "text/latex": "$x$",
        "application/json": {"a": [1]},
        "application/javascript": "alert(1)",
    }
    assert shown["metadata"] == {"image/jpeg": {"width": 3}}
    assert shown["transient"] == {} and shown["update"] is False
    assert Cell(session, "Rich()").result["data"]["text/html"] == "<b>h</b>"


def test_mimebundle_raw_and_display_ids(session):
    code = (
        "from IPython.display import update_display, clear_output\n"
        "class Bundle:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'text/plain': 'B', 'application/vnd.x+json': {'k': 1}}, {'m': 1}\n"
        "display(Bundle(), metadata={'extra': True})\n"
        "display(Bundle(), exclude={'application/vnd.x+json'})\n"
        "handle = display({'text/plain': 'raw'}, raw=True, display_id='d1')\n"
        "handle.update('new')\n"
        "update_display('newer', display_id='d1')\n"
        "clear_output(wait=True)"
    )
    cell = Cell(session, code)
    bundle, excluded, raw, first, second = cell.of("display")
    assert bundle["data"] == {"text/plain": "B", "application/vnd.x+json": {"k": 1}}
    assert bundle["metadata"] == {"m": 1, "extra": True}
    assert excluded["data"] == {"text/plain": "B"}
    assert raw["data"] == {"text/plain": "raw"} and raw["transient"] == {"display_id": "d1"}
    assert [first["update"], second["update"]] == [True, True]
    assert second["data"] == {"text/plain": "'newer'"}
    assert cell.of("clear_output") == [{"type": "clear_output", "wait": True,
                                       "id": cell.events[0]["id"]}]


def test_failing_reprs_are_tracebacks_as_in_ipython(session):
    code = (
        "class Bad:\n"
        "    def _repr_html_(self): raise RuntimeError('no html')\n"
        "    def _repr_png_(self): return 42\n"
        "    def __repr__(self): raise RuntimeError('no repr')\n"
        "display(Bad())"
    )
    cell = Cell(session, code)  # as on the local kernel: two tracebacks, a warning, status ok
    assert cell.status == "ok" and cell.of("display") == []
    assert sorted(e["evalue"] for e in cell.of("error")) == ["no html", "no repr"]
    assert "image/png formatter returned invalid type" in cell.text("stderr")
    shown = Cell(session, "Bad()")  # shown by the display hook: the cell fails
    assert shown.status == "error" and shown.of("result") == []


def test_matplotlib_inline_shows_figures(session):
    cell = Cell(session, "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                         "plt.plot([1, 3, 2]);")
    (figure,) = cell.of("display")
    assert base64.b64decode(figure["data"]["image/png"]).startswith(b"\x89PNG")
    assert figure["data"]["text/plain"].startswith("<Figure size")


# --- input ---------------------------------------------------------------------------------


def test_input_getpass_and_stdin_round_trip(session):
    asked = []

    def answer(prompt: str, password: bool) -> str:
        asked.append((prompt, password))
        return f"answer{len(asked)}"

    cell = Cell(
        session,
        "import getpass, sys\nprint('before')\na = input('Name? ')\n"
        "b = getpass.getpass()\nc = sys.stdin.readline()\n(a, b, c)",
        on_input=answer,
    )
    assert asked == [("Name? ", False), ("Password: ", True), ("", False)]
    assert cell.result["data"]["text/plain"] == "('answer1', 'answer2', 'answer3\\n')"
    assert cell.text() == "before\n"


def test_input_without_stdin_raises_as_ipykernel_does(session):
    error = Cell(session, "input('x')").error
    assert (error["ename"], error["evalue"]) == (
        "StdinNotImplementedError",
        "raw_input was called, but this frontend does not support input requests.")
    assert Cell(session, "import sys\nsys.stdin.readline()").result["data"]["text/plain"] == "''"

    def broken(prompt: str, password: bool) -> str:
        raise OSError("frontend gone")

    assert Cell(session, "input('x')", on_input=broken).error["ename"] == "EOFError"


# --- interrupts ----------------------------------------------------------------------------


def interrupt_later(session: RunnerSession, delay: float) -> list[float]:
    """Call session.interrupt() after ``delay`` s from another thread; return [when]."""
    when: list[float] = []

    def fire() -> None:
        when.append(time.monotonic())
        session.interrupt()

    threading.Timer(delay, fire).start()
    return when


def test_interrupt_stops_sleep_and_keeps_state(fresh):
    Cell(fresh, "kept = 'still here'")
    when = interrupt_later(fresh, 0.5)
    cell = Cell(fresh, "import time\ntime.sleep(1000)")
    assert cell.done_at - when[0] < 2
    assert cell.error["ename"] == "KeyboardInterrupt"
    assert "time.sleep(1000)" in plain(cell.error["traceback"])
    assert Cell(fresh, "kept").result["data"]["text/plain"] == "'still here'"


def test_keyboard_interrupt_in_the_host_thread_interrupts_the_cell(fresh):
    threading.Timer(0.5, _thread.interrupt_main).start()  # like the kernel's SIGINT handler
    cell = Cell(fresh, "import time\ntime.sleep(1000)")
    assert cell.error["ename"] == "KeyboardInterrupt"
    assert Cell(fresh, "1").status == "ok"


def test_interrupt_reaches_input_and_shell_commands(fresh):
    def never(prompt: str, password: bool) -> str:
        raise KeyboardInterrupt  # the user pressed stop instead of answering

    error = Cell(fresh, "input()", on_input=never).error
    assert (error["ename"], error["evalue"]) == ("KeyboardInterrupt", "Interrupted by user")
    when = interrupt_later(fresh, 0.5)
    cell = Cell(fresh, "!sleep 1000\nprint('after')")  # IPython stops the command, goes on
    assert cell.done_at - when[0] < 3
    assert cell.status == "ok" and cell.text().endswith("after\n")
    when = interrupt_later(fresh, 0.5)
    cell = Cell(fresh, "%%bash\nsleep 1000")
    assert cell.done_at - when[0] < 3


def test_interrupt_while_idle_is_harmless(fresh):
    fresh.interrupt()
    time.sleep(0.2)
    assert Cell(fresh, "1 + 1").result["data"]["text/plain"] == "2"


def test_interrupts_racing_cell_ends_never_break_the_runner(fresh):
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            fresh.interrupt()
            time.sleep(0.0005)

    threading.Thread(target=hammer, daemon=True).start()
    try:
        for _ in range(60):  # each interrupted cell costs IPython a formatted traceback
            cell = Cell(fresh, "sum(range(1000))")
            assert cell.status == "ok" or cell.reply["ename"] == "KeyboardInterrupt"
    finally:
        stop.set()
    time.sleep(0.1)
    assert Cell(fresh, "21 * 2").result["data"]["text/plain"] == "42"


# --- shell escapes -------------------------------------------------------------------------


def test_shell_lines_and_cell_magics(session):
    cell = Cell(session, "!echo hi\nfor i in range(2):\n    !echo loop\n!exit 3\n_exit_code")
    assert cell.text() == "hi\r\nloop\r\nloop\r\n"  # through a pty, as IPython runs them
    assert cell.result["data"]["text/plain"] == "3"
    assert Cell(session, "files = !echo a; echo b\nfiles").result["data"]["text/plain"] == (
        "['a', 'b']")
    assert Cell(session, "n = 7\n!echo {n * 6} $n").text() == "42 7\r\n"
    assert Cell(session, "%%sh\necho sh $((1 + 1))").text() == "sh 2\n"
    failed = Cell(session, "%%sh\necho out\nexit 4")
    assert failed.text() == "out\n"
    assert failed.error["ename"] == "CalledProcessError"
    assert "exit status 4" in failed.error["evalue"]
    if shutil.which("bash"):
        assert Cell(session, "%%bash\necho ${BASH_VERSION:+bash}").text() == "bash\n"


def test_working_folder_is_the_runners(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with RunnerSession(LocalProcessTransport(cwd=tmp_path)) as own:
        own.wait_ready(TIMEOUT)
        assert Cell(own, "%pwd").result["data"]["text/plain"] == repr(str(tmp_path))
        assert Cell(own, "!ls").text() == "data.csv\r\n"
        assert Cell(own, "open('data.csv').read()").result["data"]["text/plain"] == "'a,b\\n'"


def test_bang_inside_a_string_is_left_alone(session):
    cell = Cell(session, 's = """\n!not a command\n"""\ns')
    assert cell.result["data"]["text/plain"] == "'\\n!not a command\\n'"


# --- comms ---------------------------------------------------------------------------------


def test_comms_both_ways_with_binary_buffers(session):
    code = (
        "from comm import create_comm, get_comm_manager\n"
        "got = []\n"
        "def opened(comm, msg):\n"
        "    comm.on_msg(lambda m: (got.append((m['content']['data'], bytes(m['buffers'][0]))),"
        " comm.send({'echo': m['content']['data']}, buffers=[b'\\x00\\xff'])))\n"
        "get_comm_manager().register_target('test.target', opened)\n"
        "c = create_comm(target_name='from.sandbox', data={'a': 1})"
    )
    (opened,) = Cell(session, code).of("comm_open")
    assert (opened["target_name"], opened["data"]) == ("from.sandbox", {"a": 1})
    events: list[dict] = []
    session.comm("comm_open", {"comm_id": "c1", "target_name": "test.target", "data": {}},
                 on_event=events.append, timeout=TIMEOUT)
    session.comm("comm_msg", {"comm_id": "c1", "data": {"x": 2},
                              "buffers": [base64.b64encode(b"buf").decode()]},
                 on_event=events.append, timeout=TIMEOUT)
    (echo,) = events
    assert (echo["type"], echo["comm_id"], echo["data"]) == ("comm_msg", "c1", {"echo": {"x": 2}})
    assert base64.b64decode(echo["buffers"][0]) == b"\x00\xff"
    assert Cell(session, "got").result["data"]["text/plain"] == "[({'x': 2}, b'buf')]"
    assert session.comm_info("test.target", timeout=TIMEOUT) == {
        "c1": {"target_name": "test.target"}}
    session.comm("comm_close", {"comm_id": "c1", "data": {}}, on_event=events.append,
                 timeout=TIMEOUT)
    assert "c1" not in session.comm_info(timeout=TIMEOUT)


# --- completion, inspection ----------------------------------------------------------------


def test_complete_names_attributes_and_keywords(session):
    Cell(session, "import os\ncompletion_target = 1")
    reply = session.complete("x = completion_ta", 17, timeout=TIMEOUT)
    assert reply["matches"] == ["completion_target"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (4, 17)
    assert "path" in session.complete("os.pa", 5, timeout=TIMEOUT)["matches"]
    assert "import" in session.complete("impo", 4, timeout=TIMEOUT)["matches"]
    assert "print" in session.complete("pri", 3, timeout=TIMEOUT)["matches"]


def test_the_completer_is_made_at_first_use_and_keeps_config_set_before(fresh):
    """The shell starts without IPython's completer (its module imports jedi); ``%config``
    before any completion configures it as in a local python3 kernel, where
    ``%config Completer.use_jedi = False`` (common in public notebooks) is said first."""
    first = Cell(fresh, "import sys\nprint('IPython.core.completer' in sys.modules)")
    assert first.text() == "False\n"
    Cell(fresh, "%config Completer.use_jedi = False")
    Cell(fresh, "%config IPCompleter.greedy = True")
    shown = Cell(fresh, "c = get_ipython().Completer\nprint(c.use_jedi, c.greedy)")
    assert shown.text() == "False True\n"
    listed = Cell(fresh, "%config")
    assert "IPCompleter" in listed.text() and "ZMQInteractiveShell" in listed.text()
    Cell(fresh, "completion_target = 1")
    assert fresh.complete("completion_ta", 13, timeout=TIMEOUT)["matches"] == [
        "completion_target"]


def test_the_collector_runs_in_cells_as_in_a_local_kernel(session):
    """The runner holds the cyclic collector off while IPython loads, then enables it; the
    objects its start made are the collector's as any others (gc.get_objects() finds the
    shell, as in a local kernel; the attack tests find the runner so)."""
    shown = Cell(session, "import gc\nprint(gc.isenabled(), gc.get_threshold()[0] > 0, "
                          "any(o is get_ipython() for o in gc.get_objects()), "
                          "gc.get_freeze_count())")
    assert shown.text() == "True True True 0\n"


def test_a_completion_first_makes_the_completer(fresh):
    Cell(fresh, "completion_target = 1")
    assert fresh.complete("completion_ta", 13, timeout=TIMEOUT)["matches"] == [
        "completion_target"]
    assert Cell(fresh, "print(get_ipython().Completer.use_jedi)").text() == "True\n"


def test_inspect_shows_signature_doc_and_source(session):
    Cell(session, "def documented(a, b=2):\n    'Adds things.'\n    return a + b")
    reply = session.inspect("documented(1, ", 14, timeout=TIMEOUT)
    assert reply["found"] is True
    text = plain([reply["data"]["text/plain"]])
    assert "Signature: documented(a, b=2)" in text and "Adds things." in text
    source = plain([session.inspect("documented", 3, 1, timeout=TIMEOUT)["data"]["text/plain"]])
    assert "return a + b" in source
    assert session.inspect("no_such_name", 3, timeout=TIMEOUT)["found"] is False
    assert session.inspect("os.path.join()", 9, timeout=TIMEOUT)["found"] is True


@pytest.mark.parametrize(
    ("code", "answer"),  # what the local python3 kernel answers
    [
        ("print(1)", {"status": "complete"}),
        ("def f():", {"status": "incomplete", "indent": "    "}),
        ("x = (", {"status": "incomplete", "indent": ""}),
        ("if True:\n    x = 1", {"status": "incomplete", "indent": "    "}),
        ("if True:\n    x = 1\n", {"status": "complete"}),
        ("1 +", {"status": "invalid"}),
        ("!ls", {"status": "complete"}),
        ("%%sh\nls", {"status": "incomplete", "indent": ""}),
        ("print('hello", {"status": "incomplete", "indent": ""}),
    ],
)
def test_is_complete(session, code, answer):
    assert session.is_complete(code, timeout=TIMEOUT) == answer


def test_stuck_introspection_never_wedges_the_runner():
    env = {**os.environ, "AGENTKERNEL_INTROSPECTION_LIMIT": "4"}
    with RunnerSession(LocalProcessTransport(env=env)) as fresh:
        fresh.wait_ready(TIMEOUT)
        stuck_introspection(fresh)


def stuck_introspection(fresh: RunnerSession) -> None:
    Cell(fresh, "import time\nclass Spins:\n    def __repr__(self):\n        while True: pass\n"
                "class Sleeps:\n    def __dir__(self):\n        time.sleep(60); return []\n"
                "spins, sleeps = Spins(), Sleeps()")
    started = time.monotonic()
    with pytest.raises(RunnerError, match="stopped: interrupted, or not finished within 4 s"):
        fresh.inspect("spins", 2, timeout=TIMEOUT)  # Python code: stopped by an interrupt
    assert time.monotonic() - started < 8
    assert "print" in fresh.complete("pri", 3, timeout=TIMEOUT)["matches"]
    with pytest.raises(TimeoutError):
        fresh.complete("sleeps.", 7, timeout=6)  # blocked in C: the worker stays busy
    started = time.monotonic()
    with pytest.raises(RunnerError, match="unavailable"):
        fresh.inspect("zip", 1, timeout=TIMEOUT)
    assert time.monotonic() - started < 1
    assert Cell(fresh, "6 * 7").result["data"]["text/plain"] == "42"
    when = interrupt_later(fresh, 0.5)
    cell = Cell(fresh, "time.sleep(1000)")
    assert cell.error["ename"] == "KeyboardInterrupt" and cell.done_at - when[0] < 2


# --- which IPython -------------------------------------------------------------------------


def test_runner_and_host_agree_on_the_bundle_layout():
    assert (ipython_path.SITE, ipython_path.MANIFEST) == (SITE, MANIFEST)


@pytest.mark.parametrize(("folder", "version"), [
    ("ipython-8.12.3.dist-info", "8.12.3"),
    ("ipython-8.5.0-py3.11.egg-info", "8.5.0"),  # Debian's python3-ipython
    ("IPython-7.31.1.dist-info", "7.31.1"),
    (None, None),
])
def test_the_images_ipython_version_comes_from_its_metadata(tmp_path, folder, version):
    (tmp_path / "IPython").mkdir()
    (tmp_path / "IPython" / "__init__.py").write_text("raise SystemExit('imported')\n")
    if folder:
        (tmp_path / folder).mkdir()
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from agentkernel.runner import ipython_path; "
            "print(json.dumps(ipython_path.image_ipython()))")
    found = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, check=True).stdout
    assert json.loads(found) == version


def bundle_runner(bundle: Path) -> RunnerSession:
    """A runner on this Python without site-packages, so IPython can only come from
    ``bundle``, as in an image without IPython."""
    return RunnerSession(LocalProcessTransport([sys.executable, "-S"], bundle=str(bundle)))


def test_the_bundle_alone_runs_ipython(tmp_path):
    with tarfile.open(fileobj=io.BytesIO(host_bundle().tar())) as tar:
        tar.extractall(tmp_path, filter="data")
    (tmp_path / ".complete").write_text("")
    with bundle_runner(tmp_path) as own:
        ready = own.wait_ready(TIMEOUT)
        assert (ready["ipython_from"], ready["ipython"]) == ("agentkernel", IPython.__version__)
        assert Cell(own, "import IPython, comm\nIPython.__file__").result[
            "data"]["text/plain"].startswith(repr(str(tmp_path / SITE))[:-1])
        assert Cell(own, "x = !echo hi\nx").result["data"]["text/plain"] == "['hi']"
        found = Cell(own, "import importlib.util as u\nu.find_spec('matplotlib_inline').origin")
        assert found.result["data"]["text/plain"].startswith(repr(str(tmp_path / SITE))[:-1])


def test_a_bundle_with_ipython8_runs_it_before_the_bundles_own(tmp_path):
    """The volume of an image with a matplotlib older than 3.9: IPython 8 and matplotlib-inline
    0.1 come from their own site folder, the rest (comm, traitlets) from the bundle's."""
    with tarfile.open(fileobj=io.BytesIO(host_bundle().tar(ipython8.ensure_installed()))) as tar:
        tar.extractall(tmp_path, filter="data")
    (tmp_path / ".complete").write_text("")
    with bundle_runner(tmp_path) as session:
        ready = session.wait_ready(TIMEOUT)
        assert (ready["ipython_from"], ready["ipython"]) == ("agentkernel", ipython8.IPYTHON)
        origins = Cell(session, "import importlib.util as u\n[u.find_spec(m).origin for m in "
                                "('IPython', 'matplotlib_inline', 'comm', 'traitlets')]")
        files = ast.literal_eval(origins.result["data"]["text/plain"])
        sites = [str(tmp_path / site) + "/" for site in (IPYTHON8_SITE, IPYTHON8_SITE, SITE, SITE)]
        assert [f.startswith(site) for f, site in zip(files, sites, strict=True)] == [True] * 4
        shown = Cell(session, "from IPython.core.pylabtools import backend2gui\n"
                              "import IPython; IPython.version_info[0]")
        assert shown.result["data"]["text/plain"] == "8"


def test_an_ipython_that_fails_to_load_ends_the_session_with_the_reason(tmp_path):
    (tmp_path / "agentkernel-bundle.json").write_text(json.dumps(
        {"ipython": "9.0", "min_python": [3, 10]}))
    (tmp_path / ".complete").write_text("")  # complete, but no IPython in it
    with bundle_runner(tmp_path) as session:
        assert session.wait_ready(TIMEOUT)["ipython_from"] == "agentkernel"
        with pytest.raises(RunnerGone, match="IPython could not start in the sandbox: "
                                             "ModuleNotFoundError: No module named"):
            Cell(session, "1")


@pytest.mark.parametrize(("manifest", "complete", "message"), [
    ({"ipython": "99.0", "min_python": [3, 99]}, True,
     r"Python 3\.\d+\.\d+ is older than 3\.99, which IPython 99\.0 .* needs"),
    ({"ipython": "9.0", "min_python": [3, 10]}, False, "incomplete .*`agentkernel gc --bundles`"),
])
def test_an_unusable_bundle_is_one_line(tmp_path, manifest, complete, message):
    (tmp_path / "agentkernel-bundle.json").write_text(json.dumps(manifest))
    if complete:
        (tmp_path / ".complete").write_text("")
    with pytest.raises(RunnerUnsupported, match=message) as caught:
        session = bundle_runner(tmp_path)
        with session:
            session.wait_ready(TIMEOUT)
    assert "\n" not in str(caught.value)


# --- push / pull ---------------------------------------------------------------------------


def test_push_pull_round_trip(session):
    session.push({"pushed": {"a": [1, 2]}, "other": 3.5}, timeout=TIMEOUT)
    assert Cell(session, "pushed['a'][1] + other").result["data"]["text/plain"] == "5.5"
    assert session.pull(["pushed", "other"], timeout=TIMEOUT) == {
        "pushed": {"a": [1, 2]},
        "other": 3.5,
    }


def test_pull_reports_missing_and_unpicklable_names(session):
    Cell(session, "gen = (i for i in [])")
    with pytest.raises(RunnerError, match="'nothing_here' is not defined") as caught:
        session.pull(["nothing_here"], timeout=TIMEOUT)
    assert "\n" not in str(caught.value)
    with pytest.raises(RunnerError, match="cannot pickle 'gen'.*generator"):
        session.pull(["gen"], timeout=TIMEOUT)


def test_push_reports_bad_values_and_names(session):
    with pytest.raises(RunnerError, match="cannot pickle 'lock'"):
        session.push({"lock": threading.Lock()}, timeout=TIMEOUT)
    with pytest.raises(RunnerError, match="'not valid' is not a valid Python name"):
        session.push({"not valid": 1}, timeout=TIMEOUT)


# --- failures and limits -------------------------------------------------------------------


def test_killed_runner_raises_runner_gone(fresh):
    pid = fresh.wait_ready(1)["pid"]
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
    start = time.monotonic()
    with pytest.raises(RunnerGone, match="exited"):
        Cell(fresh, "import time\ntime.sleep(1000)")
    assert time.monotonic() - start < 5
    with pytest.raises(RunnerGone):
        fresh.complete("x", 1, timeout=TIMEOUT)


class DeadTransport:
    """A transport whose runner died at once, leaving ``stream`` on stdout and a note on stderr."""

    def __init__(self, stream: bytes) -> None:
        self._chunks = [stream, b""]

    def write(self, data: bytes) -> None:
        pass

    def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    def close(self) -> None:
        pass

    def stderr_tail(self) -> str:
        return "Traceback (most recent call last):\nImportError: boom\n"


def test_runner_gone_names_the_reason_and_stderr():
    with pytest.raises(RunnerGone, match="exited.*ImportError: boom"):
        RunnerSession(DeadTransport(b"")).wait_ready(TIMEOUT)
    with pytest.raises(RunnerGone, match="broke the protocol.*JSON"):
        RunnerSession(DeadTransport(b"\x00\x00\x00\x01x")).wait_ready(TIMEOUT)


@pytest.mark.parametrize("status", [0, 3, 137, 255])
def test_main_command_reports_the_runners_exit_then_holds(status):
    """The container's main process (runner_main_command) run by this host's /bin/sh with a
    program in the runner's place: after the program, one ``exited`` frame with its status,
    then nothing until stdin's EOF (the lifeline), at which it exits 0."""
    script = runner_main_command()[:4]
    with subprocess.Popen([*script, "sh", "-c", f"exit {status}"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as proc:
        frames = FrameDecoder().feed(proc.stdout.read1(65536))
        assert frames == [{"type": "exited", "code": status}]
        time.sleep(0.2)
        assert proc.poll() is None, "the main process must hold the lifeline"
        proc.stdin.write(b"anything the host still sends\n")
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == b""


def test_session_on_the_main_command_ends_with_the_runners_exit_code():
    """A runner run by the main process's script: its death ends the session (the stream
    itself stays open: it is the lifeline) with the exit code the ``exited`` frame gave."""
    wrapper = runner_main_command()[:4]
    with RunnerSession(LocalProcessTransport([*wrapper, sys.executable])) as own:
        own.wait_ready(TIMEOUT)
        assert Cell(own, "1 + 1").result["data"]["text/plain"] == "2"
        with pytest.raises(RunnerGone, match="the runner exited"):
            Cell(own, "import os\nos._exit(3)")
        assert own.exit_code() == 3


def test_large_output_arrives_complete(session):
    cell = Cell(session, "import sys\nsys.stdout.write('x' * 20_000_000)\nprint('end')")
    text = cell.text()
    assert len(text) == 20_000_004 and text.endswith("xend\n")


def test_background_output_between_cells_goes_to_on_orphan():
    orphans: list[dict] = []
    with new_session(on_orphan=orphans.append) as own:
        Cell(own, "import threading, time\nthreading.Timer(0.3, print, ('late',)).start()")
        deadline = time.monotonic() + 5
        while "".join(f["text"] for f in orphans) != "late\n" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert {(f["type"], f["id"], f["name"]) for f in orphans} == {("stream", None, "stdout")}
    assert "".join(f["text"] for f in orphans) == "late\n"


@contextlib.contextmanager
def raw_runner() -> Iterator[tuple[subprocess.Popen, FrameDecoder]]:
    """The runner as a bare subprocess, after its ready frame, for protocol-level tests."""
    command = [sys.executable, "-u", "-c", runner_source()]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        decoder = FrameDecoder()
        read_frame(proc, decoder, "ready")
        yield proc, decoder


def read_frame(proc: subprocess.Popen, decoder: FrameDecoder, kind: str) -> dict:
    while True:
        data = proc.stdout.read1(65536)
        assert data, f"EOF before a {kind} frame"
        for frame in decoder.feed(data):
            if frame["type"] == kind:
                return frame


def send(proc: subprocess.Popen, data: bytes) -> None:
    proc.stdin.write(data)
    proc.stdin.flush()


def test_unknown_request_gets_an_error_and_shutdown_exits_zero():
    with raw_runner() as (proc, decoder):
        send(proc, encode_frame({"type": "frobnicate", "id": "r1"}))
        assert read_frame(proc, decoder, "done") == {
            "type": "done",
            "id": "r1",
            "status": "error",
            "error": "unknown request type 'frobnicate'",
        }
        send(proc, encode_frame({"type": "shutdown"}))
        assert proc.wait(timeout=5) == 0


def test_eof_on_stdin_exits_zero_and_bad_requests_exit_nonzero():
    with raw_runner() as (proc, _):
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
    with raw_runner() as (proc, decoder):
        send(proc, b"\x00\x00\x00\x01x")
        assert "unreadable request stream" in read_frame(proc, decoder, "log")["message"]
        assert proc.wait(timeout=5) != 0


def test_execute_timeout_leaves_the_cell_running(fresh):
    with pytest.raises(TimeoutError):
        fresh.execute("import time\ntime.sleep(0.5)\nfinished = True", on_event=print, timeout=0.1)
    assert Cell(fresh, "finished").result["data"]["text/plain"] == "True"
