"""The differential yardstick's own parts, without kernels: the normaliser masks only what
legitimately differs between two runs of one kernel, the comparator tells real differences
apart, causes are named from the source and the outputs, and the corpus is what its generator
writes."""

from __future__ import annotations

import base64
import importlib.util
import json

import nbformat
import pytest
from helpers.differential import (
    CORPUS,
    PROJECT,
    CellRun,
    CellView,
    Context,
    NotebookRun,
    cell_view,
    compare_cells,
    compare_runs,
    corpus_notebooks,
    fresh_copy,
    normalise,
)
from helpers.differential_causes import cause_of

CTX = Context(folder="/tmp/pytest-of-root/pytest-7/differential0/09-pandas", hostname="buildhost")
OTHER = Context(folder="/tmp/pytest-of-root/pytest-7/test_ipython0/runs/09-pandas",
                hostname="3f2a9c81d0e4")
PNG_A = base64.b64encode(b"\x89PNG\r\n\x1a\nfirst image bytes").decode()
PNG_B = base64.b64encode(b"\x89PNG\r\n\x1a\nother image bytes").decode()


def stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def result(data: dict, count: int = 1) -> dict:
    return {"output_type": "execute_result", "data": data, "metadata": {},
            "execution_count": count}


def shown(data: dict) -> dict:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def error(ename: str, evalue: str) -> dict:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": ["..."]}


def view(outputs: list[dict], status: str = "ok", ctx: Context = CTX, payload=(),
         source: str = "x") -> CellView:
    return cell_view(CellRun(0, source, True, status, outputs, list(payload)), ctx)


def same(a: list[dict], b: list[dict], **kw) -> bool:
    return compare_cells(view(a, **kw), view(b, ctx=OTHER, **kw)) is None


# -- the normaliser ------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("<__main__.Basket object at 0x7f3a2c1d9e50>", "<__main__.Basket object at 0x<ADDR>>"),
    ("CPU times: user 265 μs, sys: 10 μs, total: 275 μs\nWall time: 384 μs\n",
     "CPU times: <TIME>\nWall time: <TIME>\n"),
    ("CPU times: user 1.2 ms, sys: 0 ns, total: 1.2 ms\nWall time: 10.1 ms",
     "CPU times: <TIME>\nWall time: <TIME>"),
    ("59.4 µs ± 0 ns per loop (mean ± std. dev. of 1 run, 1 loop each)\n",
     "<TIME> ± <TIME> per loop (mean ± std. dev. of 1 run, 1 loop each)\n"),
    ("/tmp/ipykernel_48213/2897614516.py:1: UserWarning: careful",
     "<CELL_FILE>:1: UserWarning: careful"),
    ("invalid syntax (2897614516.py, line 1)", "invalid syntax (<CELL_FILE>, line 1)"),
    ("'/tmp/pytest-of-root/pytest-7/differential0/09-pandas'", "'<RUN_DIR>'"),
    ("/tmp/pytest-of-root/pytest-7/differential0/09-pandas/notebooks/results/a.csv",
     "<RUN_DIR>/notebooks/results/a.csv"),
    ("/root/.venv/lib/python3.11/site-packages/IPython/core/x.py:3: W",
     "<SITE>/IPython/core/x.py:3: W"),
    ("/usr/lib/python3/dist-packages/pandas/core/frame.py", "<SITE>/pandas/core/frame.py"),
    ("File: /usr/lib/python3.11/json/__init__.py", "File: <STDLIB>/json/__init__.py"),
    ("File:      ~/.pyenv/versions/3.11.7/lib/python3.11/json/__init__.py",
     "File:      <STDLIB>/json/__init__.py"),
    ('<table id="T_1a2b3">', '<table id="T_<ID>">'),
    ("comm 6f1d2c3b4a5968778695a4b3c2d1e0f9 open", "comm <UUID> open"),
    ("running on buildhost now", "running on <HOSTNAME> now"),
])
def test_normalise_masks_what_legitimately_differs(text: str, expected: str) -> None:
    assert normalise(text, CTX) == expected


@pytest.mark.parametrize("text", [
    "0xff and 0x10",  # short hex is data, not an address
    "took 3 s in total",  # a duration outside %time/%timeit lines
    "Wall time is what we measured",
    "CPU times were low",
    "<cell-3>:1: UserWarning: careful",  # another kernel's cell file name is a real difference
    "/workspace/data.csv",  # a different folder than the run's is a real difference
    "buildhosts and rebuildhost",  # the host name only as a whole word
    "[1, 2, 3]\n",
])
def test_normalise_keeps_real_content(text: str) -> None:
    assert normalise(text, CTX) == text


# -- the comparator ------------------------------------------------------------------------------
def test_equal_after_normalising_legitimate_differences() -> None:
    a = [stream("CPU times: user 1 ms, sys: 0 ns, total: 1 ms\nWall time: 2 ms\n"),
         result({"text/plain": "<Basket at 0x7f0000001234>"}, count=3),
         shown({"image/png": PNG_A, "text/plain": "<Figure size 640x480 with 1 Axes>"})]
    b = [stream("CPU times: user 9 ms, sys: 1 ms, total: 10 ms\n"),
         stream("Wall time: 12 ms\n"),  # the same stream, split differently
         result({"text/plain": "<Basket at 0x7fffdeadbeef>"}, count=7),
         shown({"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": PNG_B})]
    assert same(a, b)


def test_stdout_and_stderr_interleaving_is_not_a_difference() -> None:
    a = [stream("out 1\n"), stream("err\n", "stderr"), stream("out 2\n")]
    b = [stream("out 1\nout 2\n"), stream("err\n", "stderr")]
    assert same(a, b)


def test_run_folders_are_masked_per_run() -> None:
    a = [result({"text/plain": f"'{CTX.folder}'"})]
    b = [result({"text/plain": f"'{OTHER.folder}'"})]
    assert same(a, b)


@pytest.mark.parametrize(("a", "b", "what"), [
    ([result({"text/plain": "42"})], [result({"text/plain": "41"})], "text/plain"),
    ([result({"text/plain": "42"})], [shown({"text/plain": "42"})], "outputs"),
    ([result({"text/plain": "42"})], [], "outputs"),
    ([stream("hi\n")], [stream("hi\n", "stderr")], "outputs"),
    ([stream("hi\n")], [stream("hi\r\n")], "stdout"),
    ([stream("hi\n")], [stream("hi\n\n")], "stdout"),
    ([result({"text/plain": "x", "text/html": "<b>x</b>"})],
     [result({"text/plain": "x"})], "outputs"),
    ([result({"text/plain": "x", "text/html": "<b>x</b>"})],
     [result({"text/plain": "x", "text/html": "<i>x</i>"})], "text/html"),
    ([shown({"text/markdown": "*a*", "text/plain": "m"})],
     [shown({"text/markdown": "*b*", "text/plain": "m"})], "text/markdown"),
    ([shown({"application/json": {"a": 1}, "text/plain": "j"})],
     [shown({"application/json": {"a": 2}, "text/plain": "j"})], "application/json"),
    ([shown({"image/png": PNG_A, "text/plain": "f"})],
     [shown({"image/png": "", "text/plain": "f"})], "image/png"),
    ([shown({"text/plain": "a"}), shown({"text/plain": "b"})],
     [shown({"text/plain": "b"}), shown({"text/plain": "a"})], "text/plain"),
    ([error("NameError", "name 'x' is not defined")],
     [error("NameError", "name 'y' is not defined")], "error value"),
    ([error("StdinNotImplementedError", "raw_input was called")],
     [error("EOFError", "EOF when reading a line")], "error"),
    ([error("SyntaxError", "invalid syntax (2897614516.py, line 1)")],
     [error("SyntaxError", "invalid syntax (<cell-2>, line 1)")], "error value"),
    ([stream("<__main__.T at 0x7f01234567>")],
     [stream("<__main__.T object at 0x7f01234567>")], "stdout"),
])
def test_real_differences_are_not_equal(a: list[dict], b: list[dict], what: str) -> None:
    difference = compare_cells(view(a), view(b, ctx=OTHER))
    assert difference is not None and what in difference


def test_status_and_payload_count() -> None:
    assert compare_cells(view([], status="ok"), view([], status="error")) == "status: ok vs error"
    page = [{"source": "page", "data": {"text/plain": "Signature: f(x)"}, "start": 0}]
    difference = compare_cells(view([], payload=page), view([stream("Signature: f(x)")]))
    assert difference is not None  # help printed instead of paged is a difference
    assert compare_cells(view([], payload=page), view([], payload=page)) is None


def test_a_cell_that_did_not_run_differs() -> None:
    ran = view([result({"text/plain": "1"})])
    lost = cell_view(CellRun(0, "1"), OTHER)
    assert compare_cells(ran, lost) == "ran: True vs False"


# -- causes and the report -----------------------------------------------------------------------
def nb_run(name: str, cells: list[tuple[str, list[dict], str]], ctx: Context) -> NotebookRun:
    return NotebookRun(name, "k", ctx.folder, [CellRun(i, src, True, status, outs)
                                              for i, (src, outs, status) in enumerate(cells)],
                       hostname=ctx.hostname)


def test_causes_of_the_kernel_object_and_of_agentkernel_notes() -> None:
    ok = "ok"
    parent = "kernel = get_ipython().kernel\nkernel.get_parent()['content']['code']"
    ref = nb_run("n1", [
        ("import sys\nsys.version_info[:2]", [result({"text/plain": "(3, 11)"})], ok),
        (parent, [result({"text/plain": "'x'"})], ok),
        ("kernel.session.send(kernel.iopub_socket, 'stream', {});", [stream("a\n")], ok),
    ], CTX)
    other = nb_run("n1", [
        ("import sys\nsys.version_info[:2]",
         [stream("[agentkernel] the sandbox has no disk limit\n", "stderr"),
          result({"text/plain": "(3, 11)"})], ok),
        (parent, [error("KeyError", "'content'")], "error"),
        ("kernel.session.send(kernel.iopub_socket, 'stream', {});", [], ok),
    ], OTHER)
    causes = [r.cause for r in compare_runs([ref], [other], cause_of).results]
    assert causes == ["agentkernel's notice on stderr", "the kernel object (get_ipython().kernel)",
                      "the kernel object (get_ipython().kernel)"]


def test_causes_and_report() -> None:
    ok = "ok"
    missing_np = [error("NameError", "name 'np' is not defined")]
    no_ipython = [error("ModuleNotFoundError", "No module named 'IPython'")]
    ref = nb_run("n1", [
        ("%matplotlib inline\nimport numpy as np", [], ok),
        ("np.arange(3)", [result({"text/plain": "array([0, 1, 2])"})], ok),
        ("%%bash\necho hi", [stream("hi\n")], ok),
        ("!ls data", [stream("a.csv\r\n")], ok),
        ("len?", [], ok),
        (">>> 1 + 1", [result({"text/plain": "2"})], ok),
        ("from IPython.display import HTML", [], ok),
        ("_", [result({"text/plain": "2"})], ok),
        ("name = input()", [error("StdinNotImplementedError", "no")], "error"),
        ("list(range(30))", [result({"text/plain": "[0,\n 1]"})], ok),
        ("print('same')", [stream("same\n")], ok),
    ], CTX)
    other = nb_run("n1", [
        ("%matplotlib inline\nimport numpy as np", [error("SyntaxError", "bad")], "error"),
        ("np.arange(3)", missing_np, "error"),
        ("%%bash\necho hi", [error("SyntaxError", "bad")], "error"),
        ("!ls data", [stream("ls: cannot access", "stderr")], ok),
        ("len?", [stream("Signature: len(obj, /)")], ok),
        (">>> 1 + 1", [error("SyntaxError", "bad")], "error"),
        ("from IPython.display import HTML", no_ipython, "error"),
        ("_", [result({"text/plain": "''"})], ok),
        ("name = input()", [error("EOFError", "EOF")], "error"),
        ("list(range(30))", [result({"text/plain": "[0, 1]"})], ok),
        ("print('same')", [stream("same\n")], ok),
    ], OTHER)
    report = compare_runs([ref], [other], cause_of)
    causes = [r.cause for r in report.results]
    assert causes == ["%matplotlib", "a name an earlier failing cell should have defined",
                      "cell magic", "shell escape", "help", "pasted prompt",
                      "IPython not importable", "output history", "stdin",
                      "result repr (IPython pretty printer)", None]
    assert (report.total, report.equal) == (11, 1)
    text = report.render("t", details=True)
    assert "1/11 cells equal (9.1%), 10 differ" in text
    assert "n1[1] a name an earlier failing cell should have defined" in text


def test_a_kernel_that_stopped_is_reported() -> None:
    ref = nb_run("n2", [("1", [result({"text/plain": "1"})], "ok")], CTX)
    other = NotebookRun("n2", "k", OTHER.folder, [CellRun(0, "1")],
                        failure="DeadKernelError: kernel died")
    report = compare_runs([ref], [other], cause_of)
    assert report.results[0].cause == "kernel died or did not start"
    assert "run stopped early: n2: DeadKernelError" in report.render("t")


# -- the corpus ----------------------------------------------------------------------------------
def generator():
    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  PROJECT.parent / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_is_what_the_generator_writes() -> None:
    make = generator()
    assert sorted(p.stem for p in corpus_notebooks()) == sorted(make.NOTEBOOKS)
    for path in corpus_notebooks():
        expected = make.notebook(path.stem, make.NOTEBOOKS[path.stem])
        assert nbformat.reads(path.read_text(), as_version=4) == expected, (
            f"{path.name} differs from its generator: run tests/differential/make_notebooks.py")


def test_corpus_shape() -> None:
    notebooks = corpus_notebooks()
    assert len(notebooks) >= 40
    for path in notebooks:
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert 6 <= len(code) <= 15, f"{path.name}: {len(code)} code cells"
        assert all(not c["outputs"] for c in code), f"{path.name} is stored with outputs"
    assert (PROJECT / "data" / "measurements.csv").is_file()
    assert (PROJECT / "images" / "logo.png").is_file()
    assert CORPUS == PROJECT / "notebooks"


def test_fresh_copy_is_a_git_project(tmp_path) -> None:
    copy = fresh_copy(PROJECT, tmp_path, "nb")
    assert (copy / ".git").is_dir() and (copy / "data" / "notes.txt").is_file()
    assert sorted(p.name for p in (copy / "notebooks").glob("*.ipynb")) == sorted(
        p.name for p in corpus_notebooks())
