"""The notebook's workspace: which host folder a sandbox sees as the notebook's project.

A notebook reads ``../data/input.csv`` and writes ``out.csv`` next to itself, so the sandbox
sees more than the notebook's own folder: the project around it, mounted copy-on-write at the
same path as on the host (``os.getcwd()`` and absolute paths match the local kernel's).
How far up the project reaches, first match wins:

1. the Jupyter server's root folder, when the kernel was launched by a server that left its
   runtime file (``jpserver-<pid>.json``, with ``root_dir``) for the kernel's parent process:
   it is what the user opened, and what the file browser shows;
2. the notebook's repository root (the nearest folder above it holding ``.git``);
3. the notebook's own folder.

It is then bounded: the root is the highest folder between the notebook's folder and that
bound which the policy lets sandboxes reach (never ``$HOME``, never a folder holding
credentials or the engine's socket; see hostpaths.py). A server started in ``$HOME`` with the
notebook in ``~/project/nb`` gives ``~/project``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

WORKSPACE_MODES = ("copy-on-write", "bind", "off")
"""How the policy gives the project to a sandbox: copy-on-write (cells change their own copy;
the host's files stay as they are), bind (the host folder itself, with the policy's mode), off."""


def server_root(parent_pid: int | None = None) -> Path | None:
    """The root folder of the Jupyter server that launched this kernel (its runtime file, by
    the parent process's pid), or None when no server did."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    pid = parent_pid or os.getppid()
    for name in (f"jpserver-{pid}.json", f"nbserver-{pid}.json"):
        try:
            info = json.loads(Path(jupyter_runtime_dir(), name).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        root = info.get("root_dir") or info.get("notebook_dir") if isinstance(info, dict) else None
        if isinstance(root, str) and os.path.isabs(root):
            return Path(root).resolve()
    return None


def repository_root(folder: Path) -> Path | None:
    """The nearest folder from ``folder`` up holding ``.git`` (a git work tree's root)."""
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate / ".git"):
            return candidate
    return None


def project_root(notebook_dir: Path, reachable: Callable[[Path], bool],
                 server: Path | None = None) -> Path | None:
    """The workspace's root for a notebook in ``notebook_dir`` (resolved): the highest folder
    from it up to the bound (``server``'s root, else the repository's, else the folder itself)
    for which ``reachable`` holds; None when not even the notebook's folder is."""
    if not reachable(notebook_dir):
        return None
    bound = next((b for b in (server, repository_root(notebook_dir))
                  if b is not None and (b == notebook_dir or b in notebook_dir.parents)),
                 notebook_dir)
    root = notebook_dir
    for parent in notebook_dir.parents:
        if parent == bound.parent or not reachable(parent):
            break
        root = parent
    return root


def workspace_id(connection_file: str | None, notebook_dir: Path) -> str | None:
    """The id naming a kernel's workspace (its volumes): the same for every start of one
    kernel (a restart keeps the connection file), so files a cell wrote survive a restart as
    on the local kernel. None without a connection file (each sandbox then has its own)."""
    if not connection_file:
        return None
    digest = hashlib.sha256(f"{Path(connection_file).resolve()}\0{notebook_dir}".encode())
    return digest.hexdigest()[:16]
