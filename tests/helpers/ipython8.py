"""The pinned IPython 8 (agentkernel/sandbox/ipython8.py) that scripts/setup.sh installs on
this host, for tests that import it: missing, it fails the test with CI=true, else skips it."""

from __future__ import annotations

from pathlib import Path

from agentkernel.sandbox import ipython8
from helpers.required import unavailable


def installed_or_skip() -> Path:
    """The folder IPython 8 is installed in; a failure (CI) or a skip when it is not."""
    folder = ipython8.installed()
    if folder is None:
        unavailable("agentkernel's IPython 8 is not installed on this host (scripts/setup.sh)")
    return folder
