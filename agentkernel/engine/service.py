"""The engine process behind a local socket, and what an earlier process learned from it.

A running engine service does not read its configuration again, so an answer it gave (Podman's
/info, whether its storage can limit a container's size) holds for as long as the same process
serves the socket: the same boot, pid and start time (``service_identity``). Such an answer is
recorded in the private cache and served only to a process that finds the same service.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
from pathlib import Path
from typing import Any

from .. import procs
from ..cache import cache_dir, write_atomically
from ..errors import SandboxError

PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
SOCKET_MANAGERS = ("systemd",)  # a socket listened on by these outlives the service behind it


def peer_credentials(base_url: str) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process serving the local socket ``base_url`` (SO_PEERCRED);
    None when it cannot be told (not a unix socket, nothing listening)."""
    if not base_url.startswith("unix://"):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(base_url[len("unix://"):])
            credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
    except OSError:
        return None
    return PEERCRED.unpack(credentials)


def service_uid(base_url: str) -> int | None:
    """The uid of the process serving the local socket ``base_url``; None when it cannot be
    told."""
    peer = peer_credentials(base_url)
    return None if peer is None else peer[1]


def service_identity(base_url: str) -> str | None:
    """Which process serves the local socket ``base_url``: this boot's id, the pid of the
    process that listens on it (SO_PEERCRED) and that process's start time. None when it
    cannot be told (not a unix socket, a peer in another PID namespace, no /proc), or when
    the listener is a socket manager (systemd's socket activation), which stays the same
    while the engine behind it restarts."""
    peer = peer_credentials(base_url)
    if peer is None or peer[0] <= 0:
        return None
    pid = peer[0]
    started, boot = procs.start_time(pid), procs.boot_id()
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    if started is None or boot is None or name in SOCKET_MANAGERS:
        return None
    return f"{boot}/{pid}/{started}"


def _record_path(topic: str, base_url: str) -> Path:
    digest = hashlib.sha256(base_url.encode()).hexdigest()[:16]
    return cache_dir() / f"{topic}-{digest}.json"


def read_record(topic: str, base_url: str) -> tuple[str | None, Any] | None:
    """The last record on ``topic`` for ``base_url``: (the service that answered, what was
    recorded), or None when there is none that parses."""
    try:
        record = json.loads(_record_path(topic, base_url).read_text(encoding="utf-8"))
        service, value = record["service"], record["value"]
    except (OSError, UnicodeError, SandboxError, ValueError, KeyError, TypeError):
        return None
    return (service, value) if service is None or isinstance(service, str) else None


def recorded(topic: str, base_url: str, service: str | None) -> tuple[bool, Any]:
    """(True, the value) when the record on ``topic`` was made for the service that serves
    ``base_url`` now (``service``, known); (False, None) otherwise."""
    record = read_record(topic, base_url)
    if service is None or record is None or record[0] != service:
        return False, None
    return True, record[1]


def record(topic: str, base_url: str, service: str | None, value: Any) -> None:
    """Record ``value`` (JSON) on ``topic`` as ``service``'s answer (best effort)."""
    with contextlib.suppress(OSError, SandboxError, TypeError, ValueError):
        write_atomically(_record_path(topic, base_url),
                         json.dumps({"service": service, "value": value}))
