"""IPython 8's terminal, imported when something asks for it, not at the sandbox's start.

IPython 8 imports ``IPython.terminal.embed`` with its package (for ``IPython.embed``), and
with it prompt_toolkit, the terminal's shell and debugger: measured in the test image, about
350 of the 700 modules and half of the package's import (0.33-0.38 s against 0.17-0.20 s
without), for a terminal a kernel never shows. IPython 9 no longer imports it.

:func:`import_ipython` imports IPython 8 with a placeholder standing in for that module while
the package imports, then removes the placeholder, so the first use imports the real module:
``IPython.embed`` (and ``from IPython import embed``) through the package's ``__getattr__``
(PEP 562), ``IPython.terminal.embed`` and everything in it by a plain import. They behave
as on IPython itself; only what sits in ``sys.modules`` before that first use differs.
"""

import sys
import types

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
        import IPython.terminal as terminal
    finally:
        if sys.modules.get(MODULE) is placeholder:
            del sys.modules[MODULE]
    if getattr(terminal, "embed", None) is placeholder:
        del terminal.embed
    if "embed" in IPython.__dict__ and IPython.embed is None:  # the placeholder's
        del IPython.embed
        IPython.__getattr__ = _package_attribute
    return IPython


def _package_attribute(name):
    """A name IPython's package lacks: ``embed`` from the real terminal module, imported
    now; AttributeError for anything else, as without this."""
    if name != "embed":
        raise AttributeError(f"module 'IPython' has no attribute {name!r}")
    import IPython
    from IPython.terminal.embed import embed

    IPython.embed = embed
    return embed
