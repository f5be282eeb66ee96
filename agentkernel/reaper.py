"""A watcher on the host that removes a sandbox when its owner is gone.

The container's own lifeline (its main process ends when its stdin closes) lives inside the
container, where a cell can stop it (SIGSTOP) or replace it. This watcher lives on the host, in
its own session (so killing the kernel's process group spares it), outside the kernel and the
container: it holds the read end of a pipe whose write end only the owner holds (or those the
owner handed the sandbox to); when every write end is closed, the owner is gone, and it asks the
engine to remove the container, then exits.

Standard library only: it is started as ``python -I -S -c PROGRAM`` (a few ms), where PROGRAM
runs :mod:`agentkernel.engine.transport`'s source as a module, then this file's
(:func:`program`): its ``DELETE`` reaches the engine as every connection of ours does (unix, TCP
with TLS checking the CA and the host name, SSH), under the same API_VERSION.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing, json, subprocess: loaded only where needed (a fast start)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

if __name__ != "__main__":
    from .engine import transport
else:  # run by program(): the transport's source ran first
    transport = sys.modules["_agentkernel_transport"]  # type: ignore[no-redef]

ATTEMPTS = 20  # one every RETRY_S while the engine does not answer
RETRY_S = 0.5
DISCARD = b"discard-volumes\n"  # written by the owner: remove the volumes too
TLS_KEYS = ("ca", "cert", "key", "verify")  # Endpoint.to_dict()["tls"]


def remove_container(url: str, tls: Mapping[str, Any] | None, container_id: str) -> int:
    """Ask the engine to remove ``container_id`` (force); the HTTP status (0: no answer)."""
    return _delete(url, tls, f"/containers/{container_id}?force=1")


def _delete(url: str, tls: Mapping[str, Any] | None, what: str) -> int:
    """``DELETE`` the engine's object ``what``; the HTTP status (0: no answer). OSError
    (ssl.SSLCertVerificationError among them) when the engine cannot be reached as asked."""
    context = None
    if tls is not None and transport.scheme(url) in transport.TCP_SCHEMES:
        context = transport.tls_context(tls.get("ca"), tls.get("cert"), tls.get("key"),
                                        bool(tls.get("verify", True)))
    head = transport.request_head("DELETE", what, transport.host_header(url),
                                  {"Connection": "close"})
    with transport.connect(url, context) as sock:
        sock.sendall(head)
        try:
            status, _, _ = transport.read_response_head(lambda: sock.recv(4096))
        except ConnectionError:
            return 0
    return status


def _retry(call: Callable[[], int], done: tuple[int, ...]) -> None:
    """Call ``call`` until it answers a status of ``done`` (at most ATTEMPTS times)."""
    for _ in range(ATTEMPTS):
        try:
            status = call()
        except (OSError, ValueError):
            status = 0
        if status in done:
            return
        time.sleep(RETRY_S)


def watch(url: str, tls: Mapping[str, Any] | None, container_id: str,
          volumes: Sequence[str]) -> None:
    """Wait for EOF on stdin (the owner is gone), then remove the container; when the owner
    wrote DISCARD before it went, remove ``volumes`` too (its workspace)."""
    told = b""
    while chunk := os.read(0, 4096):
        told = (told + chunk)[-64:]
    # removed, gone, or being removed already
    _retry(lambda: remove_container(url, tls, container_id), (200, 204, 404, 409))
    if DISCARD in told:
        for volume in volumes:  # 409 while the engine still removes the container
            _retry(lambda v=volume: _delete(url, tls, f"/volumes/{v}"), (200, 204, 404))


def program() -> str:
    """The watcher's ``-c`` source: the transport's source run as the module
    ``_agentkernel_transport``, then this file's as ``__main__``."""
    global _program
    if _program is None:
        with open(transport.__file__, encoding="utf-8") as file:
            transport_source = file.read()
        with open(__file__, encoding="utf-8") as file:
            own_source = file.read()
        _program = (
            "import sys\n"
            "module = type(sys)('_agentkernel_transport')\n"
            "sys.modules[module.__name__] = module\n"
            f"exec(compile({transport_source!r}, 'agentkernel/engine/transport.py', 'exec'), "
            "module.__dict__)\n"
            f"exec(compile({own_source!r}, 'agentkernel/reaper.py', 'exec'), "
            "{'__name__': '__main__'})\n"
        )
    return _program


_program: str | None = None


def start(url: str, container_id: str, tls: Mapping[str, Any] | None = None,
          volumes: Sequence[str] = ()) -> int:
    """Start a watcher for ``container_id`` on the engine at ``url`` (with ``tls``: the
    engine's TLS files as ``Endpoint.to_dict()["tls"]`` gives them); return the write end of
    its pipe (close-on-exec: only this process holds it; pass it on explicitly to hand the
    sandbox over). Writing DISCARD into it before closing it removes ``volumes`` after the
    container."""
    import json
    import subprocess

    tls_arg = json.dumps({key: tls.get(key) for key in TLS_KEYS}) if tls else ""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    argv = [sys.executable, "-I", "-S", "-c", program(), url, container_id, tls_arg, *volumes]
    try:
        subprocess.Popen(argv, stdin=read_end, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return write_end


if __name__ == "__main__":
    if sys.argv[3]:
        import json

        watch(sys.argv[1], json.loads(sys.argv[3]), sys.argv[2], sys.argv[4:])
    else:
        watch(sys.argv[1], None, sys.argv[2], sys.argv[4:])
