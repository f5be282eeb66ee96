"""agentkernel.runner.ipython_compat: IPython's private names the runner's shell calls are
there, with the signatures we call them with, on this host's IPython (which agentkernel's
bundle gives images without one) and on the IPython 8 images with an older matplotlib get; a
version that changes one fails at the shell's import with a line naming the version."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import IPython
import pytest
from helpers.ipython8 import installed_or_skip
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magics import CodeMagics

from agentkernel.runner import ipython_compat
from agentkernel.sandbox import ipython8


def test_this_ipython_has_what_we_call() -> None:
    found = ipython_compat.problems()
    assert not found, f"IPython {IPython.__version__} broke agentkernel's runner: {found}"


def test_the_pinned_ipython_8_has_what_we_call() -> None:
    """The IPython 8 of images whose matplotlib is older than 3.9 (sandbox/ipython8.py),
    installed by scripts/setup.sh."""
    folder = installed_or_skip()
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(folder)!r})
        sys.path.insert(0, {str(Path(ipython_compat.__file__).parent)!r})
        import IPython, ipython_compat
        print(IPython.__version__, ipython_compat.problems())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(None, 1) == [ipython8.IPYTHON, "[]\n"], result.stdout


def test_a_missing_private_is_named_with_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(CodeMagics, "_find_edit_target")
    with pytest.raises(ImportError) as raised:
        ipython_compat.check()
    message = str(raised.value)
    assert message == (f"agentkernel's runner does not support IPython {IPython.__version__}: "
                       "CodeMagics._find_edit_target is missing")


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DisplayPublisher, "_validate_data", lambda self, data: None)
    monkeypatch.setattr(InteractiveShell, "_tee", lambda self, channel, keep: None,
                        raising=False)
    found = ipython_compat.problems()
    assert "DisplayPublisher._validate_data(self, data) is not (self, data, metadata)" in found
    if hasattr(ipython_compat.HistoryManager, "outputs"):
        assert ("InteractiveShell._tee(self, channel, keep) is not (self, channel)" in found)


def test_the_output_history_needs_tee(monkeypatch: pytest.MonkeyPatch) -> None:
    """An IPython with an output history but no _tee would keep a flood unbounded: refused."""
    monkeypatch.setattr(ipython_compat.HistoryManager, "outputs", {}, raising=False)
    monkeypatch.delattr(InteractiveShell, "_tee", raising=False)
    assert "InteractiveShell._tee is missing" in ipython_compat.problems()


def test_the_hooks_are_what_ipython_calls() -> None:
    """The shell's overrides sit where IPython calls them: showtraceback and (IPython 9)
    run_cell's output keeping go through HookedShell's public-named methods."""
    seen = []

    class Shell(ipython_compat.HookedShell):
        def show_traceback_lines(self, etype, evalue, stb):
            seen.append(("traceback", etype.__name__))

        def keeping_output(self, channel, keep):
            seen.append(("keep", channel))
            return keep()

    shell = Shell()
    try:
        shell.run_cell("1 / 0")
    finally:
        Shell.clear_instance()
    assert ("traceback", "ZeroDivisionError") in seen
    if hasattr(ipython_compat.HistoryManager, "outputs"):
        assert ("keep", "stdout") in seen and ("keep", "stderr") in seen
