"""A watcher on the host that removes a sandbox when its owner is gone.

The container's own lifeline (its main process ends when its stdin closes) lives inside the
container, where a cell can stop it (SIGSTOP) or replace it. This watcher lives on the host, in
its own session (so killing the kernel's process group spares it), outside the kernel and the
container: it holds the read end of a pipe whose write end only the owner holds (or those the
owner handed the sandbox to); when every write end is closed, the owner is gone, and it asks the
engine to remove the container, then exits.

Standard library only: it is started as ``python -I -S -c <this file>`` (a few ms), and speaks
the engine's HTTP API itself over a unix socket or TCP (with TLS when given certificates).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

API_VERSION = "1.41"
ATTEMPTS = 20  # one every RETRY_S while the engine does not answer
RETRY_S = 0.5
DISCARD = b"discard-volumes\n"  # written by the owner: remove the volumes too


def _connect(url: str, tls_dir: str | None) -> socket.socket:
    """A connection to the engine at ``url`` (unix://, tcp://host:port, or ssh://[user@]host
    through ``docker system dial-stdio`` there, as docker-py and the docker CLI reach it)."""
    if url.startswith("ssh://"):
        return _dial_over_ssh(url)
    if url.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(url[len("unix://"):])
        return sock
    host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    if tls_dir is None:
        return sock
    context = ssl.create_default_context(cafile=str(Path(tls_dir, "ca.pem")))
    context.check_hostname = False  # engines' certificates name the host, not an address
    context.load_cert_chain(str(Path(tls_dir, "cert.pem")), str(Path(tls_dir, "key.pem")))
    return context.wrap_socket(sock)


def _dial_over_ssh(url: str) -> socket.socket:
    """A socket whose other end is ``ssh HOST docker system dial-stdio`` (the user's ssh keys
    and known_hosts, as for the engine itself)."""
    parts = urlsplit(url)
    target = f"{parts.username}@{parts.hostname}" if parts.username else str(parts.hostname)
    port = ["-p", str(parts.port)] if parts.port else []
    ours, theirs = socket.socketpair()
    subprocess.Popen(["ssh", "-o", "BatchMode=yes", *port, "--", target, "docker", "system",
                      "dial-stdio"], stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL)
    theirs.close()
    ours.settimeout(10)
    return ours


def remove_container(url: str, tls_dir: str | None, container_id: str) -> int:
    """Ask the engine to remove ``container_id`` (force); the HTTP status (0: no answer)."""
    return _delete(url, tls_dir, f"containers/{container_id}?force=1")


def _delete(url: str, tls_dir: str | None, what: str) -> int:
    """``DELETE`` the engine's object ``what``; the HTTP status (0: no answer)."""
    request = (f"DELETE /v{API_VERSION}/{what} HTTP/1.1\r\n"
               "Host: engine\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").encode()
    with _connect(url, tls_dir) as sock:
        sock.sendall(request)
        status_line = sock.makefile("rb").readline().decode("latin-1")
    parts = status_line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _retry(call, done: tuple[int, ...]) -> None:
    """Call ``call`` until it answers a status of ``done`` (at most ATTEMPTS times)."""
    for _ in range(ATTEMPTS):
        try:
            status = call()
        except OSError:
            status = 0
        if status in done:
            return
        time.sleep(RETRY_S)


def watch(url: str, tls_dir: str | None, container_id: str, volumes: list[str]) -> None:
    """Wait for EOF on stdin (the owner is gone), then remove the container; when the owner
    wrote DISCARD before it went, remove ``volumes`` too (its workspace)."""
    told = b""
    while chunk := os.read(0, 4096):
        told = (told + chunk)[-64:]
    # removed, gone, or being removed already
    _retry(lambda: remove_container(url, tls_dir, container_id), (200, 204, 404, 409))
    if DISCARD in told:
        for volume in volumes:  # 409 while the engine still removes the container
            _retry(lambda v=volume: _delete(url, tls_dir, f"volumes/{v}"), (200, 204, 404))


def start(url: str, container_id: str, tls_dir: str | None = None,
          volumes: list[str] | tuple[str, ...] = ()) -> int:
    """Start a watcher for ``container_id``; return the write end of its pipe (close-on-exec:
    only this process holds it; pass it on explicitly to hand the sandbox over). Writing
    DISCARD into it before closing it removes ``volumes`` after the container."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    source = Path(__file__).read_text("utf-8")
    argv = [sys.executable, "-I", "-S", "-c", source, url, container_id, tls_dir or "",
            *volumes]
    subprocess.Popen(argv, stdin=read_end, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    os.close(read_end)
    return write_end


if __name__ == "__main__":
    watch(sys.argv[1], sys.argv[3] or None, sys.argv[2], sys.argv[4:])
