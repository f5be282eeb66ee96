"""The same hostile notebook through the IPython extension (``%load_ext agentkernel``).

The extension's magics run on the host like the kernel's: they obey the same operator policy
(here the default one, in a throw-away home folder), values pulled from the sandbox are rebuilt
bounded in bytes, memory and CPU, and what the sandbox displays is sanitised before IPython
publishes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.faultkit import proc_stats
from helpers.outputs import framed_source, safe_to_show
from helpers.policies import HOST_MEMORY_SHARE_MB
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output

from agentkernel.config.policy import POLICY_ENV
from agentkernel.safepickle import WORKER_CPU_S

pytestmark = pytest.mark.engine


def run_cell(shell: InteractiveShell, code: str) -> tuple[ExecutionResult, CapturedIO]:
    with capture_output() as captured:
        result = shell.run_cell(code, store_history=True)
    return result, captured


def refused(shell: InteractiveShell, code: str, *fragments: str) -> str:
    """A hostile magic: it must fail with one line holding every fragment."""
    result, _ = run_cell(shell, code)
    assert not result.success, f"{code!r} was not refused"
    message = str(result.error_in_exec)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("ext-home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".bashrc").write_text("# original\n")
    return home


@pytest.fixture(scope="module")
def shell(engine_name: str, test_image: str, home: Path) -> Iterator[InteractiveShell]:
    """The process's IPython with the extension loaded under the default policy."""
    saved = {key: os.environ.get(key) for key in (POLICY_ENV, "HOME")}
    os.environ.update({POLICY_ENV: "", "HOME": str(home)})
    ipython = InteractiveShell.instance()
    if "agentkernel" in ipython.extension_manager.loaded:
        run_cell(ipython, "%unload_ext agentkernel")
    try:
        assert run_cell(ipython, "%load_ext agentkernel")[0].success
        assert run_cell(ipython, "%sandbox start")[0].success
        yield ipython
    finally:
        run_cell(ipython, "%unload_ext agentkernel")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.parametrize("code, fragment", [
    ("%sandbox download /etc/hostname ~/.bashrc", "outside the folders"),
    ("%sandbox upload ~/.ssh /tmp/keys", "credentials"),
    ("%sandbox upload /etc/shadow /tmp/shadow", "system folder"),
    ("%sandbox start -v /etc:/hostetc", "system folder"),
    ("%sandbox start --profile permissive", "most permissive profile is moderate"),
    ("%sandbox start -p 0.0.0.0:18081:80", "port_addresses"),
    (f"%sandbox resize 1 {HOST_MEMORY_SHARE_MB + 1}", f"at most {HOST_MEMORY_SHARE_MB}, 50% of "
     "this host's memory"),
])
def test_the_policy_binds_the_extensions_magics(shell: InteractiveShell, home: Path,
                                                code: str, fragment: str) -> None:
    refused(shell, code, "refused", fragment)
    assert (home / ".bashrc").read_text() == "# original\n"


def test_a_pulled_list_too_large_is_refused_without_filling_the_host(
        shell: InteractiveShell) -> None:
    assert run_cell(shell, "%%sandbox\nbig = list(range(8_000_000))")[0].success
    before = proc_stats(os.getpid()).rss_mb
    refused(shell, "%sandbox pull big", "over the", "max_pull_mb")
    assert proc_stats(os.getpid()).rss_mb - before < 64
    assert "big" not in shell.user_ns


BOMBS = """
import fractions
class Slow:
    def __reduce__(self):
        return (fractions.Fraction, ("1e100000000",))
class Huge:
    def __reduce__(self):
        return (bytearray, (10 ** 10,))
class Listed:
    def __reduce__(self):
        return (list, (range(8_000_000),))
slow, huge, listed = Slow(), Huge(), Listed()
"""


@pytest.mark.parametrize("name, fragment", [
    ("slow", "a Fraction made from text other than 'n/d'"),
    ("huge", "needs more than"),
    ("listed", "of memory, over 8 times the 16.0 MB limit (max_pull_mb)"),
])
def test_pickles_that_build_huge_values_are_refused_in_bounded_time(
        shell: InteractiveShell, name: str, fragment: str) -> None:
    assert run_cell(shell, f"%%sandbox\n{BOMBS}")[0].success
    before, started = proc_stats(os.getpid()).rss_mb, time.monotonic()
    refused(shell, f"%sandbox pull {name}", fragment)
    took = time.monotonic() - started
    print(f"\n{name}: refused in {took:.1f} s")
    assert took < WORKER_CPU_S + 10 and proc_stats(os.getpid()).rss_mb - before < 64
    assert name not in shell.user_ns


def test_sandbox_output_is_sanitised_before_ipython_publishes_it(
        shell: InteractiveShell) -> None:
    code = ("%%sandbox\nclass Evil:\n    def _repr_html_(self):\n"
            "        return '<img src=x onerror=\"window.pwned=1\"><b>kept</b>'\n"
            "    def _repr_javascript_(self):\n        return 'window.pwned = 2'\n"
            "display(Evil())\nEvil()")
    result, out = run_cell(shell, code)
    assert result.success
    shown = [o.data for o in out.outputs] + [result.result.data]
    for data in shown:
        assert "application/javascript" not in data and safe_to_show(data["text/html"])
        assert "<b>kept</b>" in (framed_source(data["text/html"]) or data["text/html"])
