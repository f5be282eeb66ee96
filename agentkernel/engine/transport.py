"""How any process of ours reaches an engine's HTTP API: the one connection layer.

An engine listens on ``unix://PATH``, ``tcp://HOST:PORT`` (``https://``; with TLS when given
certificates) or ``ssh://[USER@]HOST[:PORT]`` (``docker system dial-stdio`` on that host, run by
the user's ssh with their keys and known_hosts, as the docker CLI does). :func:`connect` opens a
stream to it; :func:`request_head` and :func:`read_response_head` are the few lines of HTTP/1.1
spoken by hand on such a stream (the reaper's ``DELETE``, an exec's upgrade request).
``API_VERSION`` is the one version every request names.

TLS follows the docker CLI and docker-py (``TLSConfig`` over requests and urllib3): verifying
means the engine's certificate chains to the given CA *and* names the host that was dialled
(a DNS name, or an IP address in the certificate's subjectAltName, as Docker's own TLS guide
makes them); without verifying (``DOCKER_TLS`` without ``DOCKER_TLS_VERIFY``) the connection is
encrypted only. :func:`tls_context` is that policy, for every TLS connection we open ourselves;
docker-py's client is given the same files and applies the same checks.

Used by :mod:`.tlsconn` (exec streams over TLS) and by the reaper, which runs as
``python -I -S -c`` with no package on its path: so this module is standard library only,
imports ``ssl`` and ``subprocess`` only when a connection needs them, and runs from its source
alone as well (``agentkernel.reaper.program``). docker-py's client keeps its own unix, TLS and
SSH adapters for every other request, given the same files and API_VERSION
(``docker.new_client``).
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False  # typing is not imported: it is most of this module's start-up time
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

# Served by Docker 20.10 and newer and by Podman 4's compatible API; fixed, so that connecting
# costs one request (docker-py's "auto" negotiation asks /version).
API_VERSION = "1.41"
CONNECT_TIMEOUT = 10.0
MAX_HEAD = 65536  # bytes of an HTTP answer's status line and headers
TCP_SCHEMES = ("tcp", "http", "https")  # TLS when given a context


def scheme(url: str) -> str:
    """``unix``, ``tcp``, ``https``, ``ssh``... (a bare path is a unix socket)."""
    return url.partition("://")[0].lower() if "://" in url else "unix"


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of ``tcp://HOST:PORT`` (``http://``, ``https://``; IPv6 in brackets)."""
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    host, sep, port = netloc.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"not an engine address with a port: {url!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def tls_context(ca: str | None, cert: str | None, key: str | None,
                verify: bool = True) -> ssl.SSLContext:
    """The client context for an engine's TLS files: with ``verify`` the certificate must chain
    to ``ca`` (the system's CAs without one) and name the host dialled; the client certificate
    when given. OSError or ssl.SSLError when a file cannot be used."""
    import ssl

    if verify:
        context = ssl.create_default_context(cafile=ca)  # CERT_REQUIRED, check_hostname
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, key)
    return context


def connect(url: str, context: ssl.SSLContext | None = None,
            timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A stream to the engine at ``url``, with ``timeout`` on its operations. With ``context``
    (tcp://, http://, https://) it is TLS, handshake done, the host name checked as the context
    says (ssl.SSLCertVerificationError when the certificate does not name it)."""
    kind = scheme(url)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(url.split("://", 1)[-1])
        except OSError:
            sock.close()
            raise
        return sock
    if kind == "ssh":
        return dial_ssh(url, timeout)
    if kind not in TCP_SCHEMES:
        raise ValueError(f"no transport for {kind}:// engines")
    host, port = host_port(url)
    sock = open_tcp(host, port, timeout)
    if context is None:
        return sock
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def open_tcp(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A TCP connection to ``host:port`` (no delay: requests are small and wait for answers)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def dial_ssh(url: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """A socket whose other end is ``ssh [USER@]HOST docker system dial-stdio`` (the user's ssh
    keys and known_hosts, as for the engine itself; never a password prompt)."""
    import subprocess
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = f"{parts.username}@{parts.hostname}" if parts.username else str(parts.hostname)
    port = ["-p", str(parts.port)] if parts.port else []
    ours, theirs = socket.socketpair()
    try:
        subprocess.Popen(["ssh", "-o", "BatchMode=yes", *port, "--", target, "docker",
                          "system", "dial-stdio"], stdin=theirs, stdout=theirs,
                         stderr=subprocess.DEVNULL)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.settimeout(timeout)
    return ours


def host_header(url: str) -> str:
    """The ``Host`` of a request to ``url`` (the docker CLI's name for a socket's engine)."""
    return netloc(*host_port(url)) if scheme(url) in TCP_SCHEMES else "api.moby.localhost"


def netloc(host: str, port: int) -> str:
    """``host:port`` (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def request_head(method: str, path: str, host: str, headers: dict[str, str] | None = None,
                 length: int = 0) -> bytes:
    """An HTTP/1.1 request's head for ``/v{API_VERSION}{path}`` (``path`` starts with /)."""
    lines = [f"{method} /v{API_VERSION}{path} HTTP/1.1", f"Host: {host}",
             "User-Agent: agentkernel", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response_head(recv: Callable[[], bytes]) -> tuple[int, bytes, bytes]:
    """(status, the head's bytes, what came after it) of the HTTP answer ``recv`` returns in
    pieces (b"" at its end). ConnectionError when no complete head came."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = recv()
        if not chunk or len(buffer) > MAX_HEAD:
            raise ConnectionError("no HTTP answer from the engine")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {status_line[:80]!r}")
    return int(parts[1]), head, rest
