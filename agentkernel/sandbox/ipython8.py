"""IPython 8 for images whose matplotlib is older than 3.9: pinned wheels, installed once on
this host into a private folder.

matplotlib before 3.9 imports ``IPython.core.pylabtools.backend2gui`` when pyplot meets IPython
(IPython 9.16 removed it), and matplotlib-inline 0.2 needs matplotlib 3.7 (``rcParams._get``):
the newest IPython a host has cannot plot with, e.g., Debian bookworm's matplotlib 3.6. For such
an image the bundle volume also holds IPython 8, matplotlib-inline 0.1 and decorator (which
IPython 8 requires and 9 no longer does) in a site folder of their own, which the runner puts
before the bundle's (``sandbox/bundle.py``, ``runner/ipython_path.py``); everything else they
require comes from the bundle itself.

They are installed by this host's pip, pinned by version and sha256 (``--require-hashes``), the
first time an image needs them: pip fetches them from its configured index (PyPI, or a mirror
named by ``PIP_INDEX_URL`` / ``PIP_FIND_LINKS``). The folder is the Python environment's own
(``<prefix>/share/agentkernel``) when writable, else agentkernel's cache folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib import metadata

from ..cache import cache_dir
from ..errors import SandboxError, one_line

# (distribution, version, sha256 of its py3-none-any wheel)
PINNED = (
    ("ipython", "8.39.0", "bb3c51c4fa8148ab1dea07a79584d1c854e234ea44aa1283bcb37bc75054651f"),
    ("matplotlib-inline", "0.1.7",
     "df192d39a4ff8f21b1895d72e6a13f5fcc5099f00fa84384e0ea28c2cc0653ca"),
    ("decorator", "5.3.2", "d3fb2a434ac31e231d14175ecbda823d83f26b7e45270cd7cd4d0350264b79e2"),
)
IPYTHON = PINNED[0][1]
BEFORE_MATPLOTLIB = (3, 9)  # images whose matplotlib is older get these
PIP_TIMEOUT = 300  # seconds pip may take to fetch and install them


def key() -> str:
    """What names the installed folder: the pins."""
    return hashlib.sha256(json.dumps(PINNED).encode()).hexdigest()[:16]


def needed(matplotlib_version: str | None) -> bool:
    """True for an image whose matplotlib (its version string, None: none) is older than 3.9."""
    parts = (matplotlib_version or "").split(".")
    try:
        return (int(parts[0]), int(parts[1])) < BEFORE_MATPLOTLIB
    except (ValueError, IndexError):
        return False


def _folders() -> list[Path]:
    """Where the wheels are installed, in order of preference: the environment's, the cache's."""
    name = f"ipython8-{key()}"
    folders = [Path(sys.prefix) / "share" / "agentkernel" / name]
    with contextlib.suppress(SandboxError):
        folders.append(cache_dir() / name)
    return folders


def installed() -> Path | None:
    """The folder holding the pinned distributions, None when they are not installed yet."""
    for folder in _folders():
        if _holds_pins(folder):
            return folder
    return None


def distributions(folder: Path) -> tuple[metadata.Distribution, ...]:
    """The pinned distributions installed in ``folder``."""
    from importlib import metadata

    return tuple(metadata.PathDistribution(folder / _dist_info(name, version))
                 for name, version, _ in PINNED)


def _dist_info(name: str, version: str) -> str:
    return f"{name.replace('-', '_')}-{version}.dist-info"


def _holds_pins(folder: Path) -> bool:
    return all((folder / _dist_info(name, version) / "RECORD").is_file()
               for name, version, _ in PINNED)


def ensure_installed() -> Path:
    """The installed folder, installing the pinned wheels with pip first if needed;
    SandboxError (one line: pip's last words and what to do) when that fails."""
    found = installed()
    if found is not None:
        return found
    with _lock():
        found = installed()
        if found is not None:
            return found
        failures = []
        for folder in _folders():
            try:
                _install(folder)
                return folder
            except OSError as err:  # not writable: the next folder
                failures.append(f"{folder.parent}: {err.strerror or err}")
        raise SandboxError(f"no writable folder for IPython {IPYTHON}: {'; '.join(failures)}")


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """This user's lock for installing (two kernels filling two volumes at once)."""
    with open(cache_dir() / f"ipython8-{key()}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install(folder: Path) -> None:
    """pip-install the pinned wheels into a folder beside ``folder``, then rename it into place
    (a half-done install never has the final name). OSError when the parent is not writable."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        requirements = staging / "requirements.txt"
        requirements.write_text("".join(f"{name}=={version} --hash=sha256:{digest}\n"
                                        for name, version, digest in PINNED))
        _pip(["install", "--no-deps", "--only-binary=:all:", "--require-hashes", "--no-compile",
              "--target", str(staging / "site"), "-r", str(requirements)], cwd=staging)
        if not _holds_pins(staging / "site"):
            raise SandboxError(f"pip did not install IPython {IPYTHON} where it was asked to")
        (staging / "site").rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pip(arguments: list[str], cwd: Path) -> None:
    """Run this interpreter's pip (``-P``: its working folder is not on ``sys.path``)."""
    command = [sys.executable, "-P", "-m", "pip", "--disable-pip-version-check", "--no-input",
               "--quiet", *arguments]
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, timeout=PIP_TIMEOUT,
                              env={**os.environ, "PIP_USER": "0"})
    except subprocess.TimeoutExpired:
        raise _failed(f"pip took more than {PIP_TIMEOUT} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-2:]
        raise _failed(f"pip: {one_line(' '.join(errors) or f'exit {done.returncode}', 300)}")


def _failed(why: str) -> SandboxError:
    return SandboxError(
        f"could not install IPython {IPYTHON} for images whose matplotlib is older than "
        f"{'.'.join(map(str, BEFORE_MATPLOTLIB))} ({why}): let pip reach PyPI or a mirror "
        "(PIP_INDEX_URL) once, or install ipython in the image")


__all__ = ["BEFORE_MATPLOTLIB", "IPYTHON", "PINNED", "distributions", "ensure_installed",
           "installed", "key", "needed"]
