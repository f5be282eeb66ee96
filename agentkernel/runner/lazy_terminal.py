"""IPython 8's terminal, imported when something asks for it, not at the sandbox's start.

IPython 8 imports ``IPython.terminal.embed`` with its package (for ``IPython.embed``), and
with it prompt_toolkit, the terminal's shell and debugger: measured in the test image, about
350 of the 700 modules and half of the package's import (0.33-0.38 s against 0.17-0.20 s
without), for a terminal a kernel never shows. IPython 9 no longer imports it.

:func:`import_ipython` imports IPython 8 with a placeholder standing in for that module, then
removes the placeholder and the ``IPython.terminal`` package it was imported under (nothing
else of it is imported). The first use imports the terminal package again, for real, and its
``embed`` module right after it, in the order IPython 8's own import takes (its terminal
modules import one another in a cycle that only that order resolves):

- ``import IPython.terminal...`` or ``from IPython.terminal.X import Y``, through a finder on
  ``sys.meta_path`` that is removed once it served;
- ``IPython.embed``, ``from IPython import embed``, ``IPython.terminal.X`` as attributes,
  through the package's ``__getattr__`` (PEP 562).

They behave as on IPython itself; only what sits in ``sys.modules`` before that first use
differs.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

PACKAGE = "IPython.terminal"
MODULE = "IPython.terminal.embed"


def import_ipython(version):
    """Import IPython (``version``: the chosen one's) and return it; on IPython 8, without
    its terminal until first use."""
    if not str(version).startswith("8.") or "IPython" in sys.modules:
        import IPython

        return IPython
    placeholder = types.ModuleType(MODULE)
    placeholder.embed = None
    sys.modules[MODULE] = placeholder
    try:
        import IPython
    finally:
        if sys.modules.get(MODULE) is placeholder:
            del sys.modules[MODULE]
    loaded = [name for name in sys.modules if name.startswith(PACKAGE + ".")]
    if "embed" in IPython.__dict__ and IPython.embed is None and not loaded:
        del IPython.embed  # the placeholder's
        sys.modules.pop(PACKAGE, None)
        IPython.__dict__.pop("terminal", None)
        IPython.__getattr__ = _package_attribute
        sys.meta_path.insert(0, _TerminalOnFirstUse())
    elif IPython.__dict__.get("embed", "") is None:  # an IPython 8 that imported more of it
        IPython.embed = importlib.import_module(MODULE).embed  # as its own import would
    return IPython


def _package_attribute(name):
    """What IPython's package lacks until its terminal is imported: ``embed`` and
    ``terminal`` (imported now); AttributeError for anything else, as without this."""
    if name not in ("embed", "terminal"):
        raise AttributeError(f"module 'IPython' has no attribute {name!r}")
    terminal = importlib.import_module(PACKAGE)
    return terminal.embed.embed if name == "embed" else terminal


class _TerminalOnFirstUse(importlib.abc.MetaPathFinder):
    """Finds ``IPython.terminal`` once (then leaves ``sys.meta_path``): the real package,
    whose loading also imports its ``embed`` module, as IPython 8's own import did."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != PACKAGE:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenEmbed(spec.loader)
        return spec


class _ThenEmbed(importlib.abc.Loader):
    """The terminal package's own loader, then ``import IPython.terminal.embed``; the
    package keeps its own loader afterwards."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader
        import IPython

        IPython.embed = importlib.import_module(MODULE).embed
