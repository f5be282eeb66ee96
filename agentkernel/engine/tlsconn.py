"""Hijacked Docker API connections over TLS (``DOCKER_HOST=tcp://...`` with certificates).

docker-py hands out the ``ssl.SSLSocket`` of a hijacked response, which fits neither use an exec
stream has: OpenSSL's connection objects must not be used by two threads at once (a reader
thread and a writer), and an ``SSLSocket`` cannot half-close (``unwrap()`` reads on after
sending close_notify, and OpenSSL drops the application data it reads then). So exec streams
to a TLS engine are opened here: our own TLS connection (``ssl.SSLObject`` over memory BIOs,
every TLS call under one lock, socket reads and writes outside it) carrying our own HTTP
upgrade request, the one the docker CLI sends. The TCP connection, the TLS policy (the CA and
the host name checked) and the HTTP lines are :mod:`.transport`'s, as for the reaper.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from typing import Any

from ..errors import EngineError, EngineUnavailable, one_line
from . import transport
from .discovery import TLSFiles

RECV_SIZE = 65536


def client_context(tls: TLSFiles) -> ssl.SSLContext:
    """The TLS client context for these files (:func:`.transport.tls_context`'s policy)."""
    try:
        return transport.tls_context(tls.ca, tls.cert, tls.key, tls.verify)
    except (OSError, ssl.SSLError) as err:
        raise EngineUnavailable(f"cannot use the engine's TLS files: {one_line(err, 160)}"
                                ) from None


class TlsConnection:
    """A TLS client connection that one reader and several writers may share, and that can
    half-close (close_notify, then read on)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_name: str):
        self._sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_name)
        self._lock = threading.Lock()       # the SSLObject and its BIOs
        self._send_lock = threading.Lock()  # records leave in the order they were made
        self._plain = bytearray()
        self._eof = False
        self._handshake()

    def _handshake(self) -> None:
        while True:
            with self._lock:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                self._send_pending()
            if done:
                return
            data = self._sock.recv(RECV_SIZE)
            if not data:
                raise ConnectionError("the engine closed the connection during the TLS handshake")
            with self._lock:
                self._incoming.write(data)

    def _send_pending(self) -> None:
        """Send the records TLS produced (called holding ``_lock``; sends outside it)."""
        data = self._outgoing.read()
        if not data:
            return
        self._send_lock.acquire()
        self._lock.release()
        try:
            self._sock.sendall(data)
        finally:
            self._send_lock.release()
            self._lock.acquire()

    def _decrypt(self) -> None:
        """Everything the incoming records hold, into ``_plain`` (holding ``_lock``)."""
        while True:
            try:
                data = self._tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            if not data:  # the engine's close_notify
                self._eof = True
                return
            self._plain += data

    def recv(self, size: int = RECV_SIZE) -> bytes:
        """Up to ``size`` plaintext bytes as they arrive; b"" at the end."""
        while True:
            with self._lock:
                if self._plain:
                    data = bytes(self._plain[:size])
                    del self._plain[:size]
                    return data
                if self._eof:
                    return b""
            data = self._sock.recv(RECV_SIZE)
            with self._lock:
                if not data:
                    self._eof = True
                    continue
                self._incoming.write(data)
                self._decrypt()
                self._send_pending()

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what ``recv`` returns next."""
        with self._lock:
            self._plain[:0] = data

    def sendall(self, data: bytes) -> None:
        with self._lock:
            self._tls.write(data)
            self._send_pending()

    def shutdown_write(self) -> None:
        """Send close_notify: the engine sees the end of our stream; its side still flows."""
        with self._lock:
            try:
                self._tls.unwrap()  # sends close_notify; the read it then tries finds nothing
            except ssl.SSLError:
                pass
            self._send_pending()

    def close(self) -> None:
        self._sock.close()


def hijack(host: str, port: int, context: ssl.SSLContext, path: str, body: dict[str, Any],
           timeout: float) -> TlsConnection:
    """POST ``body`` to ``path`` (under ``/v{API_VERSION}``) asking for the connection
    (``Upgrade: tcp``), as ``docker exec`` and ``docker attach`` do; the connection then
    carries the raw stream.

    ConnectionError when the engine cannot be reached or its certificate does not pass (the
    backend names the action), EngineError when it refuses the request."""
    try:
        sock = transport.open_tcp(host, port, timeout)
    except OSError as err:
        raise ConnectionError(f"no TLS connection to {host}:{port}: {one_line(err, 160)}"
                              ) from None
    try:
        conn = TlsConnection(sock, context, host)
    except (OSError, ssl.SSLError) as err:
        sock.close()
        raise ConnectionError(f"no TLS connection to {host}:{port}: {one_line(err, 160)}"
                              ) from None
    payload = json.dumps(body).encode()
    head = transport.request_head(
        "POST", path, transport.netloc(host, port),
        {"Content-Type": "application/json", "Connection": "Upgrade", "Upgrade": "tcp"},
        len(payload))
    try:
        conn.sendall(head + payload)
        status, _, rest = transport.read_response_head(conn.recv)
        if status not in (101, 200):
            raise EngineError(f"the engine refused {path.rsplit('/', 1)[-1]}: "
                              f"{status} {_error_text(rest)}")
    except (OSError, ssl.SSLError) as err:
        conn.close()
        raise ConnectionError(f"the engine at {host}:{port} broke the connection: "
                              f"{one_line(err, 160)}") from None
    except EngineError:
        conn.close()
        raise
    conn.unread(rest)
    sock.settimeout(None)
    return conn


def _error_text(rest: bytes) -> str:
    """The engine's error message (its JSON body's ``message``), as far as it came."""
    text = rest.decode("utf-8", "replace")
    try:
        return one_line(json.loads(text).get("message") or text, 200)
    except (ValueError, AttributeError):
        return one_line(text, 200) or "(no message)"
