"""agentkernel.runner.lazy_terminal: IPython 8 imported without its terminal (prompt_toolkit)
until something asks for it, and then every way a notebook reaches the terminal behaves as
after IPython's own import (the reference: the same probe after a plain ``import IPython``);
the host's IPython 9 imported as it is. Each case in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import IPython
import pytest
from helpers.ipython8 import installed_or_skip

from agentkernel.runner import lazy_terminal
from agentkernel.sandbox import ipython8

# The first thing a notebook does with IPython's terminal, in each order that matters: IPython
# 8's terminal modules import one another in a cycle that only one order resolves.
FIRST_USES = {
    "from-import": "from IPython.terminal.interactiveshell import TerminalInteractiveShell",
    "import": "import IPython.terminal.debugger",
    "attribute": "IPython.terminal.interactiveshell.TerminalInteractiveShell",
    "embed": "from IPython import embed",
    "embed-attribute": "IPython.embed",
}
PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {runner!r})
    import lazy_terminal
    IPython = {importer}
    found = {{"terminal_at_import": "prompt_toolkit" in sys.modules,
              "embed_at_import": lazy_terminal.MODULE in sys.modules}}
    try:
        IPython.no_such_name
    except AttributeError as err:
        found["missing"] = str(err)
    try:
        {first_use}
        found["first_use"] = "ok"
    except Exception as err:
        found["first_use"] = type(err).__name__ + ": " + str(err)
    import IPython.terminal.embed as module
    from IPython import embed
    from IPython.terminal.embed import InteractiveShellEmbed
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    found["embed_is_real"] = embed is module.embed is IPython.embed is IPython.terminal.embed.embed
    found["shell"] = InteractiveShellEmbed.__mro__[1] is TerminalInteractiveShell
    found["attribute"] = IPython.terminal.interactiveshell.TerminalInteractiveShell.__name__
    found["loader"] = type(IPython.terminal.__loader__).__name__
    found["terminal_after"] = "prompt_toolkit" in sys.modules
    print(json.dumps(found))
""")


def probe(folder: str | None, first_use: str, lazy: bool, version: str) -> dict[str, object]:
    importer = (f"lazy_terminal.import_ipython({version!r})" if lazy
                else "__import__('IPython')")
    code = PROBE.format(runner=str(Path(lazy_terminal.__file__).parent), importer=importer,
                        first_use=first_use)
    if folder:
        code = f"import sys\nsys.path.insert(0, {folder!r})\n" + code
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("first_use", sorted(FIRST_USES))
def test_ipython_8_imports_its_terminal_at_first_use(first_use: str) -> None:
    folder = str(installed_or_skip())
    lazy = probe(folder, FIRST_USES[first_use], True, ipython8.IPYTHON)
    reference = probe(folder, FIRST_USES[first_use], False, ipython8.IPYTHON)
    for at_import in ("terminal_at_import", "embed_at_import"):  # the point of it
        assert (lazy.pop(at_import), reference.pop(at_import)) == (False, True)
    assert lazy == reference
    assert lazy["first_use"] == "ok" and lazy["embed_is_real"] and lazy["terminal_after"]


def test_another_ipython_is_imported_as_it_is() -> None:
    use = FIRST_USES["from-import"]
    assert (probe(None, use, True, IPython.__version__)
            == probe(None, use, False, IPython.__version__))
