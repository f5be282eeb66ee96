"""agentkernel.runner.lazy_terminal: IPython 8 imported without its terminal (prompt_toolkit)
until something asks for it, and then everything terminal behaves as on IPython itself; the
host's IPython 9 imported as it is. Each case in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import IPython
from helpers.ipython8 import installed_or_skip

from agentkernel.runner import lazy_terminal
from agentkernel.sandbox import ipython8

# What a notebook may do with IPython's terminal, after the runner imported IPython
PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {runner!r})
    import lazy_terminal
    IPython = lazy_terminal.import_ipython({version!r})
    found = {{"version": IPython.__version__,
              "terminal_at_import": "prompt_toolkit" in sys.modules,
              "placeholder_left": lazy_terminal.MODULE in sys.modules}}
    try:
        IPython.no_such_name
    except AttributeError as err:
        found["missing"] = str(err)
    from IPython import embed
    import IPython.terminal.embed as module
    from IPython.terminal.embed import InteractiveShellEmbed
    found["embed_is_real"] = embed is module.embed is IPython.embed
    found["embed_module"] = embed.__module__
    found["shell_class"] = InteractiveShellEmbed.__name__
    found["terminal_after"] = "prompt_toolkit" in sys.modules
    print(json.dumps(found))
""")


def probe(folder: str | None, version: str) -> dict[str, object]:
    code = PROBE.format(runner=str(Path(lazy_terminal.__file__).parent), version=version)
    if folder:
        code = f"import sys\nsys.path.insert(0, {folder!r})\n" + code
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ipython_8_imports_its_terminal_at_first_use() -> None:
    folder = installed_or_skip()
    found = probe(str(folder), ipython8.IPYTHON)
    assert found == {
        "version": ipython8.IPYTHON, "terminal_at_import": False, "placeholder_left": False,
        "missing": "module 'IPython' has no attribute 'no_such_name'",
        "embed_is_real": True, "embed_module": "IPython.terminal.embed",
        "shell_class": "InteractiveShellEmbed", "terminal_after": True}


def test_another_ipython_is_imported_as_it_is() -> None:
    found = probe(None, IPython.__version__)
    assert found["version"] == IPython.__version__
    assert found["embed_is_real"] and found["embed_module"] == "IPython.terminal.embed"
    assert not found["placeholder_left"]
