"""Host paths a sandbox may never reach, whatever the operator's policy says.

Never, not even read-only: the root and system folders, the engines' data and sockets, any
folder holding a listening unix socket at any depth (a socket in a mounted folder is a door to a
host service), Jupyter's runtime folder (every kernel's connection file and key), the user's
Jupyter config folder, IPython's folder, credentials under the home folder, and agentkernel's
own cache (what later starts trust: Podman's confined seccomp profiles, the engines' answers).
Never writable: every Jupyter config and data folder (config files and a kernelspec's argv run
on the host) and the Python that runs the kernel (a ``.pth`` file in site-packages runs at
every start). A host path is refused when it is one of these, lies inside one, or holds one:
mounting ``$HOME`` would expose ``~/.ssh``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ..cache import cache_folders
from ..engine.discovery import CONTAINERD_SOCKET_URL, docker_socket_urls, podman_socket_urls

SYSTEM_FOLDERS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr", "/var/run", "/var/log", "/var/lib/docker", "/var/lib/containers",
    "/var/lib/containerd", "/var/lib/kubelet",
)
"""Folders no sandbox may reach: the system, the engines' data and run state."""
HOME_SECRETS = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".kube", ".docker", ".netrc",
    ".git-credentials", ".pypirc", ".npmrc", ".config/gh", ".config/hub", ".password-store",
    ".local/share/keyrings", ".config/containers", ".local/share/containers", ".vault-token",
    ".terraform.d", ".cargo/credentials.toml", ".config/git/credentials",
)
"""Credentials under the home folder."""
SECRET_NAMES = frozenset(
    {s for s in HOME_SECRETS if "/" not in s}
    | {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk",
       "application_default_credentials.json"}
)
"""Names that hold credentials wherever they are (a project folder often holds a copy of
``.ssh`` or ``.aws``, or an exported key): hidden from sandboxes that see the folder."""
SECRET_SUFFIXES = tuple(tuple(s.split("/")) for s in HOME_SECRETS if "/" in s)
"""Paths of more than one name that hold credentials (``.config/gcloud``), wherever they end."""
CONNECTION_FILE_PREFIXES = ("kernel-", "jpserver-", "nbserver-")
"""Jupyter runtime files (a kernel's connection file holds its key; a server's, its token)."""
SCAN_LIMIT = 200_000
"""Most entries a folder given to a sandbox may hold: each is looked at for credentials."""


def listening_sockets() -> list[str]:
    """Paths of the unix sockets bound on this host (from /proc/net/unix)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    return [fields[7] for line in lines
            if len(fields := line.split(None, 7)) == 8 and fields[7].startswith("/")]


def engine_sockets() -> list[str]:
    """Where the engines' API sockets are (present or not)."""
    urls = [*podman_socket_urls(), *docker_socket_urls(), CONTAINERD_SOCKET_URL]
    urls += [os.environ.get(name) or "" for name in ("DOCKER_HOST", "CONTAINER_HOST")]
    return [url[len("unix://"):] for url in urls if url.startswith("unix://")]


def _jupyter() -> tuple[list[str], list[str]]:
    """(never reachable, never writable): Jupyter's runtime folder (connection files), the
    user's Jupyter config folder (tokens, passwords) and IPython's (history); every Jupyter
    config and data folder (config and kernelspecs run code on the host)."""
    from jupyter_core.paths import (
        jupyter_config_dir,
        jupyter_config_path,
        jupyter_path,
        jupyter_runtime_dir,
    )

    ipython = os.environ.get("IPYTHONDIR") or str(Path.home() / ".ipython")
    never = [jupyter_runtime_dir(), jupyter_config_dir(), ipython]
    return never, [*jupyter_config_path(), *jupyter_path()]


_ONE_CHECK: contextvars.ContextVar[dict[bool, list[tuple[Path, str]]] | None] = (
    contextvars.ContextVar("agentkernel_protected_paths", default=None))


@contextlib.contextmanager
def one_check() -> Iterator[None]:
    """Within the block (one start's checks: the policy, then the configuration), the
    protected paths are worked out once per mode, not at each path checked (each time reads
    every listening unix socket of the host and resolves some 150 paths: 5 ms). A block
    within one belongs to the outer one."""
    if _ONE_CHECK.get() is not None:
        yield
        return
    token = _ONE_CHECK.set({})
    try:
        yield
    finally:
        _ONE_CHECK.reset(token)


def protected_paths(write: bool) -> list[tuple[Path, str]]:
    """Every protected path (resolved) with what it is, for reading or for writing; worked
    out now, or once for the whole of the ``one_check`` block this runs in."""
    memo = _ONE_CHECK.get()
    if memo is None:
        return _protected_paths(write)
    if write not in memo:
        memo[write] = _protected_paths(write)
    return memo[write]


def _protected_paths(write: bool) -> list[tuple[Path, str]]:
    home = Path.home()
    never, not_writable = _jupyter()
    protected = [(p, "a system folder") for p in SYSTEM_FOLDERS]
    protected += [(p, "an engine's socket") for p in engine_sockets()]
    protected += [(p, "a unix socket of a host service") for p in listening_sockets()]
    protected += [(p, "Jupyter's or IPython's own folder") for p in never]
    protected += [(str(home / s), "credentials") for s in HOME_SECRETS]
    protected += [(str(p), "agentkernel's own cache") for p in cache_folders()]
    if write:
        protected += [(p, "a Jupyter config or data folder") for p in not_writable]
        protected += [(p, "the Python that runs this kernel")
                      for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
    seen: dict[Path, str] = {}
    for text, what in protected:
        for path in (Path(text), Path(text).resolve()):
            seen.setdefault(path, what)
    return list(seen.items())


def forbidden_reason(path: Path, protected_now: list[tuple[Path, str]]) -> str | None:
    """Why no sandbox may reach the resolved host ``path``, given ``protected_paths(write)``
    (worked out once by the caller: it resolves every listening unix socket of the host), or
    None when nothing forbids it."""
    if path == Path("/"):
        return "it is the root of the host's file system"
    for protected, what in protected_now:
        if path == protected:
            return f"it is {what} ({protected})"
        if protected in path.parents:
            return f"it is inside {what} ({protected})"
        if path in protected.parents:
            return f"it holds {what} ({protected})"
    return None
