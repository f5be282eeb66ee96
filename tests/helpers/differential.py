"""The differential yardstick of IPython fidelity: the same notebooks on two kernels, cell by cell.

The corpus is a project as users have one (tests/differential/project): notebooks in
``notebooks/``, beside ``data/``, ``images/`` and ``src/``. A notebook runs with nbclient in its
``notebooks/`` folder, in a fresh copy of the project made a git repository (``fresh_copy``), so
the kernel's workspace reaches ``../data`` as a user's does; each code cell becomes a
``CellRun``. ``cell_view`` reduces a cell to what a user sees, after normalising
only what legitimately differs between two runs of the same kernel: memory addresses, timings,
the run's folder and temporary cell files, installation paths of Python and its packages (also
under ``~``, as IPython's pager shows a path in the home folder), the host name, random ids,
PNG bytes (only their presence counts); HTML and SVG are compared as the browser's HTML parser
reads them (html5lib), so quoting, entities, attribute order and implied tags such as
``<tbody>`` do not count; execution counts and output metadata are not compared.
``compare_cells`` names the first difference; ``differential_causes.cause_of`` files each
differing cell under a cause, and ``Report`` tallies them.

A cell's view: its reply status, then its outputs in order, where a run of consecutive stream
outputs is one item holding the text of each stream (stdout and stderr travel on separate
channels, so their interleaving is not stable even on one kernel), each display_data and
execute_result is its kind, its mime types and each payload's normalised text, each error is
its name and normalised value, and each pager/next-input payload of the execute reply (what
``obj?`` and ``%load`` show) is an item too.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import html5lib
import nbformat
from nbclient import NotebookClient

PROJECT = Path(__file__).resolve().parents[1] / "differential" / "project"
NOTEBOOKS = "notebooks"  # the project's folder of notebooks
CORPUS = PROJECT / NOTEBOOKS
REFERENCE_KERNEL = "python3"
CELL_TIMEOUT = 60  # s: a corpus cell computes well under 2 s; a hung cell is interrupted
STARTUP_TIMEOUT = 120  # s: agentkernel starts its sandbox before it answers
BINARY_MIMES = ("image/png", "image/jpeg", "image/gif")
MARKUP_MIMES = ("text/html", "image/svg+xml")
# jupyter_client picks a kernel's TCP ports free, then the kernel binds them: another process
# may take one in between ("Address already in use"), and the kernel dies before it answers.
# Such a start, before any cell ran, is tried again in a fresh copy.
START_FAILURE = "Kernel died before replying to kernel_info"
START_ATTEMPTS = 3
# Appended to every notebook run, never compared: where the kernel runs, to mask it.
PROBE = "import socket as _probe_socket\nprint(_probe_socket.gethostname())"


# -- running -------------------------------------------------------------------------------------
@dataclass
class CellRun:
    """One code cell as a kernel left it."""

    index: int  # position among the notebook's cells
    source: str
    ran: bool = False
    status: str | None = None  # the execute reply's status
    outputs: list[dict[str, Any]] = field(default_factory=list)
    payload: list[dict[str, Any]] = field(default_factory=list)
    reply_error: str | None = None  # "ename: evalue" of an error reply (shown, not compared)

    def said(self, limit: int = 160) -> str:
        """In one line, what this cell showed: its error, else its first output's text."""
        if self.reply_error or any(o.get("output_type") == "error" for o in self.outputs):
            found = next((f"{o.get('ename')}: {o.get('evalue')}" for o in self.outputs
                          if o.get("output_type") == "error"), self.reply_error)
        else:
            texts = [o.get("text") or o.get("data", {}).get("text/plain", "") for o in self.outputs]
            found = next((str(t) for t in texts if t), "no output")
        return _short(" ".join(str(found).split()), limit)


@dataclass
class NotebookRun:
    """A notebook executed on one kernel."""

    name: str
    kernel: str
    folder: str  # the run's copy of the project (masked in outputs); cwd: its notebooks/
    cells: list[CellRun]
    hostname: str | None = None
    failure: str | None = None  # why the run stopped early, if it did
    seconds: float = 0.0


def corpus_notebooks(corpus: Path = CORPUS) -> list[Path]:
    """The corpus notebooks, in name order."""
    return sorted(corpus.glob("*.ipynb"))


def fresh_copy(project: Path, parent: Path, name: str) -> Path:
    """A new copy of the corpus project under ``parent``, made a git repository as a user's
    project is (notebooks write files beside them and read ``../data``)."""
    target = parent / name
    shutil.copytree(project, target, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(target)], check=True, timeout=60)
    return target


def reference_env() -> dict[str, str]:
    """The reference kernel's environment: this venv's libraries are the test image's (see
    pyproject's test extra), so it also runs the IPython that agentkernel gives an image with
    them: IPython 8 before matplotlib 3.9 (agentkernel/sandbox/ipython8.py), put first on its
    path; the kernels are compared, not two IPythons."""
    from importlib import metadata

    from agentkernel.sandbox import ipython8

    env = dict(os.environ)
    if ipython8.needed(metadata.version("matplotlib")):
        folder = str(ipython8.ensure_installed())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (folder, env.get("PYTHONPATH")) if p)
    return env


def run_notebook(path: Path, kernel_name: str, folder: Path,
                 env: dict[str, str] | None = None, project: Path | None = None) -> NotebookRun:
    """Execute ``path`` on ``kernel_name`` with cwd ``folder``; errors in cells are outputs.
    ``project`` (default ``folder``) is the run's folder masked in outputs."""
    nb = nbformat.read(path, as_version=4)
    cells = [CellRun(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    by_index = {c.index: c for c in cells}
    nb.cells.append(nbformat.v4.new_code_cell(PROBE, id="differential-probe"))
    probe_index = len(nb.cells) - 1
    run = NotebookRun(path.stem, kernel_name, str(project or folder), cells)

    def executed(cell: Any, cell_index: int, execute_reply: dict, **_: Any) -> None:
        content = (execute_reply or {}).get("content", {})
        if cell_index == probe_index:
            text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            run.hostname = text.strip() or None
            return
        if cell_index in by_index:
            found = by_index[cell_index]
            found.ran, found.status = True, content.get("status")
            found.payload = list(content.get("payload", []))
            if found.status == "error":
                found.reply_error = f"{content.get('ename')}: {content.get('evalue')}"

    client = NotebookClient(
        nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT, startup_timeout=STARTUP_TIMEOUT,
        allow_errors=True, interrupt_on_timeout=True, record_timing=False,
        resources={"metadata": {"path": str(folder)}}, on_cell_executed=executed,
    )
    start = time.monotonic()
    try:
        client.execute(**({"env": env} if env is not None else {}))
    except Exception as err:  # a dead kernel, a failed start, a timeout: the run stops here
        run.failure = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    run.seconds = time.monotonic() - start
    for cell in cells:
        if cell.ran:
            cell.outputs = [dict(o) for o in nb.cells[cell.index].outputs]
    return run


def run_corpus(kernel_name: str, workroot: Path, env: dict[str, str] | None = None,
               project: Path = PROJECT) -> list[NotebookRun]:
    """Every corpus notebook on ``kernel_name``, each in its own fresh copy of the project."""
    runs = []
    for path in corpus_notebooks(project / NOTEBOOKS):
        for attempt in range(START_ATTEMPTS):
            copy = fresh_copy(project, workroot, path.stem + ("" if not attempt else f"-{attempt}"))
            folder = copy / NOTEBOOKS
            run = run_notebook(folder / path.name, kernel_name, folder, env, project=copy)
            if not (run.failure and START_FAILURE in run.failure):
                break
        runs.append(run)
    return runs


# -- normalising ---------------------------------------------------------------------------------
# site folders; the last: the reference's IPython 8 (reference_env), installed as pip --target does
SITE = re.compile(r"~?(?:/[\w.+-]+)*/(?:lib/python3(?:\.\d+)?/(?:site|dist)-packages|"
                  r"lib/python3/dist-packages|share/agentkernel/ipython8-[0-9a-f]+)/")
STDLIB = re.compile(r"~?(?:/[\w.+-]+)*/lib/python3\.\d+/")
CELL_FILE = re.compile(r"/tmp/ipykernel_\d+/\d+\.py")
CELL_FILE_NAME = re.compile(r"\(\d+\.py, line (\d+)\)")
ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
UUID = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b")
STYLER_ID = re.compile(r"\bT_[0-9a-f]{5}(?=_|\b)")
DURATION = r"[\d.]+\s?(?:ns|µs|μs|us|ms|s|min|h)"
CPU_TIMES = re.compile(rf"^CPU times: user {DURATION}, sys: {DURATION}, total: {DURATION}$",
                       re.M)
WALL_TIME = re.compile(rf"^Wall time: {DURATION}$", re.M)
TIMEIT = re.compile(rf"{DURATION} ± {DURATION} per loop")
TIMEIT_RESULT = re.compile(rf"<TimeitResult : {DURATION} ± {DURATION} per loop")


@dataclass(frozen=True)
class Context:
    """What is particular to one run: its folder and host name."""

    folder: str = ""
    hostname: str | None = None

    @classmethod
    def of(cls, run: NotebookRun) -> Context:
        return cls(run.folder, run.hostname)


def normalise(text: str, ctx: Context) -> str:
    """``text`` with what legitimately differs between two runs of one kernel masked."""
    if ctx.folder:
        for folder in {ctx.folder, str(Path(ctx.folder).resolve())}:
            text = text.replace(folder, "<RUN_DIR>")
    text = CELL_FILE.sub("<CELL_FILE>", text)
    text = CELL_FILE_NAME.sub(r"(<CELL_FILE>, line \1)", text)
    text = SITE.sub("<SITE>/", text)
    text = STDLIB.sub("<STDLIB>/", text)
    text = ADDRESS.sub("0x<ADDR>", text)
    text = UUID.sub("<UUID>", text)
    text = STYLER_ID.sub("T_<ID>", text)
    text = CPU_TIMES.sub("CPU times: <TIME>", text)
    text = WALL_TIME.sub("Wall time: <TIME>", text)
    text = TIMEIT.sub("<TIME> ± <TIME> per loop", text)
    text = TIMEIT_RESULT.sub("<TimeitResult : <TIME> ± <TIME> per loop", text)
    if ctx.hostname and len(ctx.hostname) >= 3:
        text = re.sub(rf"\b{re.escape(ctx.hostname)}\b", "<HOSTNAME>", text)
    return text


def parsed_markup(markup: str) -> str:
    """HTML or SVG as a browser's parser builds it, serialised one canonical way."""
    fragment = html5lib.parseFragment(markup, treebuilder="etree", namespaceHTMLElements=False)
    return html5lib.serialize(fragment, tree="etree", quote_attr_values="always",
                              alphabetical_attributes=True, minimize_boolean_attributes=False,
                              omit_optional_tags=False, resolve_entities=True)


def _payload_text(mime: str, value: Any, ctx: Context) -> str:
    """One mime payload as comparable text: binary images by presence, JSON canonically."""
    if mime in BINARY_MIMES:
        try:
            raw = base64.b64decode(value if isinstance(value, str) else "".join(value))
        except (ValueError, TypeError):
            raw = b""
        return f"<{mime}: {'present' if raw else 'empty'}>"
    if not isinstance(value, str):
        value = "".join(value) if isinstance(value, list) and all(
            isinstance(v, str) for v in value) else json.dumps(value, sort_keys=True)
    if mime in MARKUP_MIMES:
        value = parsed_markup(value)
    return normalise(value, ctx)


def _bundle(kind: str, data: dict[str, Any], ctx: Context) -> tuple:
    return (kind, tuple(sorted(data)),
            tuple((m, _payload_text(m, data[m], ctx)) for m in sorted(data)))


def output_items(outputs: Iterable[dict[str, Any]], ctx: Context) -> list[tuple]:
    """A cell's outputs as comparable items (see the module docstring)."""
    items: list[tuple] = []
    streams: dict[str, str] = {}

    def end_streams() -> None:
        if streams:
            items.append(("stream", tuple((n, normalise(streams[n], ctx))
                                          for n in sorted(streams))))
            streams.clear()

    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            name = out.get("name", "")
            streams[name] = streams.get(name, "") + "".join(out.get("text", ""))
            continue
        end_streams()
        if kind in ("display_data", "execute_result"):
            items.append(_bundle(kind, dict(out.get("data", {})), ctx))
        elif kind == "error":
            items.append(("error", out.get("ename", ""), normalise(out.get("evalue", ""), ctx)))
        else:
            items.append((str(kind),))
    end_streams()
    return items


def payload_items(payload: Iterable[dict[str, Any]], ctx: Context) -> list[tuple]:
    """What the execute reply asks a frontend to show: the pager, the next input."""
    items = []
    for entry in payload:
        source = entry.get("source", "")
        if source == "page":
            items.append(_bundle("page", dict(entry.get("data", {})), ctx))
        elif source == "set_next_input":
            items.append(("set_next_input", normalise(entry.get("text", ""), ctx)))
        else:
            items.append((source,))
    return items


@dataclass(frozen=True)
class CellView:
    """What a user sees of one cell, normalised."""

    ran: bool
    status: str | None
    outputs: tuple
    payload: tuple

    @property
    def error(self) -> str | None:
        """The exception name of the cell's first error output, if any."""
        return next((o[1] for o in self.outputs if o[0] == "error"), None)


def cell_view(cell: CellRun, ctx: Context) -> CellView:
    return CellView(cell.ran, cell.status, tuple(output_items(cell.outputs, ctx)),
                    tuple(payload_items(cell.payload, ctx)))


def plain_view(view: CellView) -> CellView:
    """``view`` with every display bundle cut down to its text/plain and binary images: what
    an output sanitiser must leave alone (it may rewrite or drop markup, scripts and unknown
    mime types)."""
    kept = ("text/plain", *BINARY_MIMES)

    def cut(items: tuple) -> tuple:
        return tuple(
            (i[0], tuple(m for m in i[1] if m in kept), tuple(p for p in i[2] if p[0] in kept))
            if i[0] in ("display_data", "execute_result", "page") else i for i in items)

    return CellView(view.ran, view.status, cut(view.outputs), cut(view.payload))


def _short(value: Any, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kinds(items: tuple) -> str:
    return "[" + ", ".join(
        f"{i[0]}({','.join(n for n, _ in i[1])})" if i[0] == "stream"
        else f"{i[0]}({','.join(i[1])})" if i[0] in ("display_data", "execute_result", "page")
        else f"error({i[1]})" if i[0] == "error" else i[0]
        for i in items) + "]"


def _first_item_difference(a: tuple, b: tuple, where: str) -> str | None:
    if a == b:
        return None
    if [(i[0], i[1]) if i[0] != "stream" else ("stream", tuple(n for n, _ in i[1]))
            for i in a] != [(i[0], i[1]) if i[0] != "stream"
                            else ("stream", tuple(n for n, _ in i[1])) for i in b]:
        return f"{where}: {_kinds(a)} vs {_kinds(b)}"
    for position, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == y:
            continue
        if x[0] == "error":
            return f"{where} {position} error value: {_short(x[2])} vs {_short(y[2])}"
        pairs = x[1] if x[0] == "stream" else x[2]
        for (name, tx), (_, ty) in zip(pairs, y[1] if y[0] == "stream" else y[2], strict=True):
            if tx != ty:
                return f"{where} {position} {name}: {_short(tx)} vs {_short(ty)}"
        return f"{where} {position}: {_short(x)} vs {_short(y)}"
    return f"{where} differ"


def compare_cells(ref: CellView, other: CellView) -> str | None:
    """None when the two cells look the same to a user, else their first difference."""
    if ref.ran != other.ran:
        return f"ran: {ref.ran} vs {other.ran}"
    if ref.status != other.status:
        return f"status: {ref.status} vs {other.status}"
    if ref.error != other.error:
        return f"error: {ref.error} vs {other.error}"
    return (_first_item_difference(ref.outputs, other.outputs, "outputs")
            or _first_item_difference(ref.payload, other.payload, "payload"))


# -- reporting -----------------------------------------------------------------------------------
@dataclass
class CellResult:
    notebook: str
    cell: CellRun  # as the compared kernel left it
    difference: str | None
    cause: str | None = None


@dataclass
class Report:
    """Every compared cell, equal or not, with causes for those that differ."""

    results: list[CellResult]
    failures: list[str] = field(default_factory=list)  # runs that stopped early

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def equal(self) -> int:
        return sum(1 for r in self.results if r.difference is None)

    @property
    def ratio(self) -> float:
        return self.equal / self.total if self.total else 0.0

    def causes(self) -> list[tuple[str, list[CellResult]]]:
        """Cause -> differing cells, most cells first."""
        by_cause: dict[str, list[CellResult]] = {}
        for r in self.results:
            if r.difference is not None:
                by_cause.setdefault(r.cause or "other", []).append(r)
        return sorted(by_cause.items(), key=lambda kv: (-len(kv[1]), kv[0]))

    def summary(self) -> str:
        return (f"{self.equal}/{self.total} cells equal ({100 * self.ratio:.1f}%), "
                f"{self.total - self.equal} differ")

    def render(self, title: str, details: bool = False) -> str:
        """The cause table (one example each); with ``details`` every differing cell too."""
        lines = [title, self.summary(), ""]
        rows = self.causes()
        width = max([len(c) for c, _ in rows] + [5])
        lines.append(f"{'cause':<{width}}  cells  example")
        for cause, cells in rows:
            ex = cells[0]
            first = ex.cell.source.strip().splitlines()[0] if ex.cell.source.strip() else ""
            lines.append(f"{cause:<{width}}  {len(cells):>5}  {ex.notebook}[{ex.cell.index}] "
                         f"{_short(first, 50)}: {ex.difference}")
        for failure in self.failures:
            lines.append(f"run stopped early: {failure}")
        if details:
            lines += ["", "every differing cell:"]
            for r in self.results:
                if r.difference is not None:
                    lines.append(f"{r.notebook}[{r.cell.index}] {r.cause}: {r.difference}")
                    lines += ["    | " + s for s in r.cell.source.splitlines()]
                    lines.append(f"    -> {r.cell.said()}")
        return "\n".join(lines) + "\n"


def compare_runs(reference: list[NotebookRun], other: list[NotebookRun],
                 cause_of: Callable[..., str]) -> Report:
    """Compare two runs of the corpus notebook by notebook and cell by cell.

    ``cause_of(cell, ref_view, other_view, earlier)`` names a differing cell's cause, given the
    cells before it in the same notebook: (source, reference view, other view) each.
    """
    by_name = {r.name: r for r in other}
    results, failures = [], []
    for ref in reference:
        mine = by_name.get(ref.name)
        if mine is None:
            raise ValueError(f"notebook {ref.name} missing from the compared run")
        if ref.failure:
            raise AssertionError(f"the reference kernel failed on {ref.name}: {ref.failure}")
        if mine.failure:
            failures.append(f"{ref.name}: {mine.failure}")
        ref_ctx, my_ctx = Context.of(ref), Context.of(mine)
        earlier: list[tuple[str, CellView, CellView]] = []
        for ref_cell, my_cell in zip(ref.cells, mine.cells, strict=True):
            a, b = cell_view(ref_cell, ref_ctx), cell_view(my_cell, my_ctx)
            difference = compare_cells(a, b)
            cause = None if difference is None else cause_of(my_cell, a, b, earlier)
            results.append(CellResult(ref.name, my_cell, difference, cause))
            earlier.append((ref_cell.source, a, b))
    return Report(results, failures)
