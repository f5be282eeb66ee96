"""IPython's private names the runner's shell builds on, in one place, checked when it loads.

The shell does what ipykernel's ZMQInteractiveShell does, and like it, it leans on four
names IPython keeps private (IPython 8.0 to 9.x, the image's or agentkernel's bundle):

- ``InteractiveShell._showtraceback(etype, evalue, stb)``: where a formatted traceback is
  shown; the shell sends it as an ``error`` frame;
- ``InteractiveShell._tee(channel)`` (IPython 9, with the output history
  ``HistoryManager.outputs``): where a cell's writes to sys.stdout/stderr are kept; the shell
  bounds what is kept;
- ``DisplayPublisher._validate_data(data, metadata)``: the check of a display's mime bundle;
- ``CodeMagics._find_edit_target(shell, args, opts, last_call)``: what ``%edit`` opens.

They are named here only: the shell derives from :class:`HookedShell` and calls the functions
below. At import, :func:`problems` compares each with what we call (``inspect.signature``) and
an ImportError names IPython's version and what changed (the runner reports it as its
``fatal`` frame), instead of a shell that starts and then misbehaves.
"""

import inspect
from contextlib import contextmanager

import IPython
from IPython.core.displaypub import DisplayPublisher
from IPython.core.history import HistoryManager
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magics import CodeMagics

VERSION = str(IPython.__version__)

# (owner, private name, the parameters we call it with or override it with)
PRIVATES = (
    (InteractiveShell, "_showtraceback", ("self", "etype", "evalue", "stb")),
    (DisplayPublisher, "_validate_data", ("self", "data", "metadata")),
    (CodeMagics, "_find_edit_target", ("shell", "args", "opts", "last_call")),
)
# IPython's output history keeps a cell's writes through this one (IPython 9)
TEE = (InteractiveShell, "_tee", ("self", "channel"))


def _function(owner, name):
    """The function ``owner.name`` (unwrapped from staticmethod), or None."""
    attr = inspect.getattr_static(owner, name, None)
    return attr.__func__ if isinstance(attr, staticmethod) else attr


def problems():
    """What differs from the private names we call, in this IPython (empty: nothing)."""
    wanted = list(PRIVATES)
    if hasattr(HistoryManager, "outputs"):  # the output history, kept through _tee
        wanted.append(TEE)
    found = []
    for owner, name, params in wanted:
        function = _function(owner, name)
        where = f"{owner.__name__}.{name}"
        if not callable(function):
            found.append(f"{where} is missing")
        elif list(inspect.signature(function).parameters) != list(params):
            found.append("{}{} is not ({})".format(where, inspect.signature(function),
                                                   ", ".join(params)))
    return found


def check():
    """ImportError naming IPython's version and what changed, if anything did."""
    found = problems()
    if found:
        raise ImportError("agentkernel's runner does not support IPython {}: {}".format(
            VERSION, "; ".join(found)))


check()


def validate_display(publisher, data, metadata):
    """IPython's check of a display's mime bundle (TypeError when it is not one)."""
    DisplayPublisher._validate_data(publisher, data, metadata)


def find_edit_target(shell, args, opts, last_call):
    """(filename, line number, is temporary) that ``%edit args`` opens; MacroToEdit for a
    macro."""
    return CodeMagics._find_edit_target(shell, args, opts, last_call)


class HookedShell(InteractiveShell):
    """InteractiveShell whose traceback display and output keeping call public-named methods:
    :meth:`show_traceback_lines` and :meth:`keeping_output`."""

    def show_traceback_lines(self, etype, evalue, stb):
        """Show a formatted traceback (``stb``: its lines), as IPython does by default."""
        InteractiveShell._showtraceback(self, etype, evalue, stb)

    def keeping_output(self, channel, keep):
        """The context in which a cell's writes to ``sys.<channel>`` are kept in the output
        history; ``keep()`` is IPython's own."""
        return keep()

    def _showtraceback(self, etype, evalue, stb):
        self.show_traceback_lines(etype, evalue, stb)

    @contextmanager
    def _tee(self, channel):
        with self.keeping_output(channel, lambda: super(HookedShell, self)._tee(channel)):
            yield
