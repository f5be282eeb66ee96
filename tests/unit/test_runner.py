"""Fast tests of the runner and the host session, with the runner as a local subprocess."""

from __future__ import annotations

import _thread
import ast
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from helpers.runner import TIMEOUT, Cell
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkernel.errors import RunnerError, RunnerGone
from agentkernel.runner.protocol import MAX_FRAME, FrameDecoder, ProtocolError, encode_frame
from agentkernel.runner_client import LocalProcessTransport, RunnerSession, runner_source


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


def test_ready_reports_the_environment(session):
    ready = session.wait_ready(1)
    assert ready["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert ready["implementation"] == sys.implementation.name
    assert isinstance(ready["matplotlib"], bool)
    assert isinstance(ready["pid"], int)


# --- execution -----------------------------------------------------------------------------


def test_state_persists_between_cells(session):
    assert Cell(session, "persist_a = 40\ndef persist_f(x):\n    return x + 2").status == "ok"
    assert Cell(session, "persist_f(persist_a)").result["data"]["text/plain"] == "42"


def test_last_expression_result_and_history_names(session):
    first = Cell(session, "hist_x = 6\nhist_x * 7")
    count = first.reply["execution_count"]
    assert first.result["execution_count"] == count
    assert first.result["data"] == {"text/plain": "42"}
    second = Cell(session, f"[_, _{count}]")
    assert second.result["data"]["text/plain"] == "[42, 42]"
    assert second.reply["execution_count"] == count + 1
    assert Cell(session, "__").result["data"]["text/plain"] == "42"


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


def test_error_shows_only_user_frames(session):
    Cell(session, "def err_inner():\n    raise ValueError('bad value')")
    cell = Cell(session, "x_err = 1\nerr_inner()")
    assert cell.status == "error"
    error = cell.error
    assert (error["ename"], error["evalue"]) == ("ValueError", "bad value")
    text = "\n".join(error["traceback"])
    assert "<cell-" in text and "err_inner()" in text and "raise ValueError('bad value')" in text
    assert "runner" not in text and "<string>" not in text
    assert error["traceback"][-1] == "ValueError: bad value"


def test_error_keeps_frames_of_libraries_the_user_called(session):
    text = "\n".join(Cell(session, "import json\njson.loads('{')").error["traceback"])
    assert "json" in text and "decoder.py" in text and "runner" not in text


def test_syntax_error_shows_line_and_caret(session):
    error = Cell(session, "ok = 1\nbroken = (1,\n").error
    assert error["ename"] == "SyntaxError"
    text = "\n".join(error["traceback"])
    assert "broken = (1," in text and "^" in text and "ast.py" not in text


def test_system_exit_is_an_error_not_an_exit(session):
    assert Cell(session, "import sys\nsys.exit(3)").error["ename"] == "SystemExit"
    assert Cell(session, "1").status == "ok"


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
    assert shown["data"] == {
        "text/html": "<b>h</b>",
        "text/markdown": "*m*",
        "image/svg+xml": "<svg/>",
        "image/png": base64.b64encode(b"\x89PNG").decode(),
        "image/jpeg": base64.b64encode(b"\xff\xd8").decode(),
        "text/latex": "$x$",
        "application/json": {"a": [1]},
        "application/javascript": "alert(1)",
        "text/plain": "Rich()",
    }
    assert shown["metadata"] == {"image/jpeg": {"width": 3}}
    assert shown["transient"] == {} and shown["update"] is False
    assert Cell(session, "Rich()").result["data"]["text/html"] == "<b>h</b>"


def test_mimebundle_raw_and_display_ids(session):
    code = (
        "class Bundle:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'text/plain': 'B', 'application/vnd.x+json': {'k': 1}}, {'m': 1}\n"
        "display(Bundle(), metadata={'extra': True})\n"
        "handle = display({'text/plain': 'raw'}, raw=True, display_id='d1')\n"
        "handle.update('new')\n"
        "update_display('newer', display_id='d1')"
    )
    bundle, raw, first, second = Cell(session, code).of("display")
    assert bundle["data"] == {"text/plain": "B", "application/vnd.x+json": {"k": 1}}
    assert bundle["metadata"] == {"m": 1, "extra": True}
    assert raw["data"] == {"text/plain": "raw"} and raw["transient"] == {"display_id": "d1"}
    assert [first["update"], second["update"]] == [True, True]
    assert second["data"] == {"text/plain": "'newer'"}


def test_failing_reprs_are_skipped_not_fatal(session):
    code = (
        "class Bad:\n"
        "    def _repr_html_(self): raise RuntimeError('no html')\n"
        "    def _repr_png_(self): return 42\n"
        "    def __repr__(self): raise RuntimeError('no repr')\n"
        "display(Bad())\nBad()"
    )
    cell = Cell(session, code)
    assert cell.status == "ok"
    (shown,) = cell.of("display")
    assert list(shown["data"]) == ["text/plain"]
    assert shown["data"]["text/plain"].startswith("<__main__.Bad object at")
    assert list(cell.result["data"]) == ["text/plain"]
    assert "no html" in cell.text("stderr") and "no repr" in cell.text("stderr")
    assert "image/png" in cell.text("stderr")


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


def test_input_without_a_frontend_raises_eof(session):
    def broken(prompt: str, password: bool) -> str:
        raise OSError("frontend gone")

    for on_input in (None, broken):
        error = Cell(session, "input('x')", on_input=on_input).error
        assert error["ename"] == "EOFError"
    assert Cell(session, "import sys\nsys.stdin.readline()").result["data"]["text/plain"] == "''"


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
    assert "time.sleep(1000)" in "\n".join(cell.error["traceback"])
    assert Cell(fresh, "kept").result["data"]["text/plain"] == "'still here'"


def test_keyboard_interrupt_in_the_host_thread_interrupts_the_cell(fresh):
    threading.Timer(0.5, _thread.interrupt_main).start()  # like the kernel's SIGINT handler
    cell = Cell(fresh, "import time\ntime.sleep(1000)")
    assert cell.error["ename"] == "KeyboardInterrupt"
    assert Cell(fresh, "1").status == "ok"


def test_interrupt_reaches_input_and_shell_commands(fresh):
    def never(prompt: str, password: bool) -> str:
        fresh.interrupt()
        raise KeyboardInterrupt  # the user pressed stop instead of answering

    assert Cell(fresh, "input()", on_input=never).error["ename"] == "KeyboardInterrupt"
    when = interrupt_later(fresh, 0.5)
    cell = Cell(fresh, "!sleep 1000")
    assert cell.error["ename"] == "KeyboardInterrupt"
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
        for _ in range(200):
            cell = Cell(fresh, "sum(range(1000))")
            assert cell.status == "ok" or cell.error["ename"] == "KeyboardInterrupt"
    finally:
        stop.set()
    time.sleep(0.1)
    assert Cell(fresh, "21 * 2").result["data"]["text/plain"] == "42"


# --- shell escapes -------------------------------------------------------------------------


def test_shell_lines_and_cell_magics(session):
    cell = Cell(session, "!echo hi\nfor i in range(2):\n    !echo loop\n!exit 3\n_exit_code")
    assert cell.text() == "hi\nloop\nloop\n"
    assert cell.result["data"]["text/plain"] == "3"
    assert Cell(session, "%%sh\necho sh $((1 + 1))").text() == "sh 2\n"
    failed = Cell(session, "%%sh\necho out\nexit 4")
    assert failed.text() == "out\n"
    assert failed.error["ename"] == "CalledProcessError"
    assert "exit status 4" in failed.error["evalue"]
    if shutil.which("bash"):
        assert Cell(session, "%%bash\necho ${BASH_VERSION:+bash}").text() == "bash\n"


def test_bang_inside_a_string_is_left_alone(session):
    cell = Cell(session, 's = """\n!not a command\n"""\ns')
    assert cell.result["data"]["text/plain"] == "'\\n!not a command\\n'"


# --- completion, inspection ----------------------------------------------------------------


def test_complete_names_attributes_and_keywords(session):
    Cell(session, "import os\ncompletion_target = 1")
    reply = session.complete("x = completion_ta", 17, timeout=TIMEOUT)
    assert reply["matches"] == ["completion_target"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (4, 17)
    assert "os.path" in session.complete("os.pa", 5, timeout=TIMEOUT)["matches"]
    assert "import" in session.complete("impo", 4, timeout=TIMEOUT)["matches"]
    assert "print" in session.complete("pri", 3, timeout=TIMEOUT)["matches"]


def test_inspect_shows_type_signature_and_doc(session):
    Cell(session, "def documented(a, b=2):\n    'Adds things.'\n    return a + b")
    reply = session.inspect("documented(1, ", 14, timeout=TIMEOUT)
    assert reply["found"] is True
    text = reply["data"]["text/plain"]
    assert "function" in text and "documented(a, b=2)" in text and "Adds things." in text
    source = session.inspect("documented", 3, 1, timeout=TIMEOUT)["data"]["text/plain"]
    assert "return a + b" in source
    assert session.inspect("no_such_name", 3, timeout=TIMEOUT)["found"] is False
    assert session.inspect("os.path.join()", 9, timeout=TIMEOUT)["found"] is True


@pytest.mark.parametrize(
    ("code", "status", "indent"),
    [
        ("print(1)", "complete", ""),
        ("def f():", "incomplete", "    "),
        ("x = (", "incomplete", ""),
        ("if True:\n    x = 1", "incomplete", "    "),
        ("if True:\n    x = 1\n", "complete", ""),
        ("1 +", "invalid", ""),
        ("!ls", "complete", ""),
        ("%%sh\nls", "incomplete", ""),
    ],
)
def test_is_complete(session, code, status, indent):
    assert session.is_complete(code, timeout=TIMEOUT) == {"status": status, "indent": indent}


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
