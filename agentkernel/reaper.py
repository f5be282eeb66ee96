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

API_VERSION = "1.41"
ATTEMPTS = 20  # one every RETRY_S while the engine does not answer
RETRY_S = 0.5


def _connect(url: str, tls_dir: str | None) -> socket.socket:
    """A connection to the engine at ``url`` (unix:// or tcp://host:port)."""
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


def remove_container(url: str, tls_dir: str | None, container_id: str) -> int:
    """Ask the engine to remove ``container_id`` (force); the HTTP status (0: no answer)."""
    request = (f"DELETE /v{API_VERSION}/containers/{container_id}?force=1 HTTP/1.1\r\n"
               "Host: engine\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").encode()
    with _connect(url, tls_dir) as sock:
        sock.sendall(request)
        status_line = sock.makefile("rb").readline().decode("latin-1")
    parts = status_line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def watch(url: str, tls_dir: str | None, container_id: str) -> None:
    """Wait for EOF on stdin (the owner is gone), then remove the container."""
    while os.read(0, 4096):
        pass
    for _ in range(ATTEMPTS):
        try:
            status = remove_container(url, tls_dir, container_id)
        except OSError:
            status = 0
        if status in (200, 204, 404, 409):  # removed, gone, or being removed already
            return
        time.sleep(RETRY_S)


def start(url: str, container_id: str, tls_dir: str | None = None) -> int:
    """Start a watcher for ``container_id``; return the write end of its pipe (close-on-exec:
    only this process holds it; pass it on explicitly to hand the sandbox over)."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    source = Path(__file__).read_text("utf-8")
    argv = [sys.executable, "-I", "-S", "-c", source, url, container_id, tls_dir or ""]
    subprocess.Popen(argv, stdin=read_end, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    os.close(read_end)
    return write_end


if __name__ == "__main__":
    watch(sys.argv[1], sys.argv[3] or None, sys.argv[2])
