"""The engine transport (agentkernel/engine/transport.py) and its users: the reaper, the exec
streams' TLS connection (tlsconn) and docker-py's client share one TLS policy, under which a
certificate must chain to the engine's CA *and* name the host dialled.

A tiny engine stands in for Docker: TLS on 127.0.0.1 (client certificates required, as
``dockerd --tlsverify``) or a unix socket, recording every request head and answering a
``DELETE`` with 204, ``/_ping`` with 200 and an upgrade request with 101, then echoing.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentkernel import reaper
from agentkernel.engine import Endpoint, TLSFiles, transport
from agentkernel.engine.docker import probe
from agentkernel.engine.tlsconn import client_context, hijack

REPO = Path(__file__).resolve().parents[2]
CONTAINER = "c0ffee" * 4


# -- certificates ------------------------------------------------------------------------------
def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple | None,
           extensions: list) -> x509.Certificate:
    """A certificate for ``key``, signed by ``issuer`` (certificate, key) or by itself."""
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer or (None, key)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(signer_cert.subject if signer_cert else _name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer_key, hashes.SHA256())


def _write(folder: Path, stem: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey | None = None) -> None:
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (folder / f"{stem}-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA; server certificates naming 127.0.0.1 (IP SAN, as scripts/setup-scaleout.sh makes
    them) and naming another host only; a client certificate in the docker CLI's folder layout
    (client/ca.pem, cert.pem, key.pem)."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test engine CA", ca_key, None,
                [(x509.BasicConstraints(ca=True, path_length=None), True)])
    _write(folder, "ca", ca)
    server_usage = (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    for stem, names in (("right", [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                   x509.DNSName("localhost")]),
                        ("wrong", [x509.DNSName("engine.example.org")])):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(folder, stem, _issue("127.0.0.1", key, (ca, ca_key),  # CN is never a name
                                    [(x509.SubjectAlternativeName(names), False),
                                     server_usage]), key)
    client = folder / "client"
    client.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    _write(client, "cert", _issue("agentkernel-client", key, (ca, ca_key), [
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)]), key)
    (client / "cert-key.pem").rename(client / "key.pem")
    (client / "ca.pem").write_bytes((folder / "ca.pem").read_bytes())
    return folder


def _tls(pki: Path, verify: bool = True) -> TLSFiles:
    return TLSFiles.in_folder(str(pki / "client"), verify)


# -- a tiny engine -----------------------------------------------------------------------------
@dataclass
class FakeEngine:
    url: str
    requests: list[str] = field(default_factory=list)  # each request's first line
    handshake_errors: list[str] = field(default_factory=list)


def _serve(listener: socket.socket, context: ssl.SSLContext | None, engine: FakeEngine) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            conn.settimeout(5)
            _answer(conn, engine)
        except (OSError, ssl.SSLError) as err:
            engine.handshake_errors.append(str(err))
        finally:
            conn.close()


def _answer(conn: socket.socket, engine: FakeEngine) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            return
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].decode()
    engine.requests.append(line)
    declared = re.search(rb"(?i)content-length: *(\d+)", head)
    length = int(declared.group(1)) if declared else 0
    while len(rest) < length:
        rest += conn.recv(4096)
    if line.startswith("DELETE "):
        conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    elif line.startswith("GET ") and "/_ping" in line:
        conn.sendall(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 2\r\n\r\nOK")
    elif b"upgrade: tcp" in head.lower():
        conn.sendall(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
        while data := conn.recv(4096):  # echo until the client's half-close
            conn.sendall(data)
    else:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def serve(pki: Path, tmp_path: Path) -> Iterator:
    """serve("right" | "wrong" | "plain" | "unix") -> a FakeEngine listening until the test
    ends (TLS with the certificate of that name, plain TCP, a unix socket)."""
    listeners = []

    def start(kind: str) -> FakeEngine:
        if kind == "unix":
            path = str(tmp_path / "engine.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            engine, context = FakeEngine(f"unix://{path}"), None
        elif kind == "plain":
            listener = socket.create_server(("127.0.0.1", 0))
            engine, context = FakeEngine(f"tcp://127.0.0.1:{listener.getsockname()[1]}"), None
        else:
            listener = socket.create_server(("127.0.0.1", 0))
            engine = FakeEngine(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(pki / f"{kind}.pem", pki / f"{kind}-key.pem")
            context.verify_mode = ssl.CERT_REQUIRED  # dockerd --tlsverify
            context.load_verify_locations(pki / "ca.pem")
        listener.listen(16)
        listeners.append(listener)
        threading.Thread(target=_serve, args=(listener, context, engine), daemon=True).start()
        return engine

    yield start
    for listener in listeners:
        listener.close()


def _tls_dict(pki: Path, verify: bool = True) -> dict:
    return Endpoint("tcp://127.0.0.1:1", _tls(pki, verify)).to_dict()["tls"]


# -- the reaper --------------------------------------------------------------------------------
def test_the_reaper_refuses_an_engine_certificate_for_another_host(serve, pki: Path) -> None:
    """The certificate chains to the engine's CA but names engine.example.org, not the
    127.0.0.1 dialled: a man in the middle holding any certificate of that CA. No request may
    leave."""
    engine = serve("wrong")
    with pytest.raises(ssl.SSLCertVerificationError, match="127.0.0.1"):
        reaper.remove_container(engine.url, _tls_dict(pki), CONTAINER)
    assert engine.requests == []


def test_the_reaper_deletes_through_a_certificate_naming_the_address(serve, pki: Path) -> None:
    engine = serve("right")
    assert reaper.remove_container(engine.url, _tls_dict(pki), CONTAINER) == 204
    assert engine.requests == [f"DELETE /v{transport.API_VERSION}/containers/{CONTAINER}"
                               "?force=1 HTTP/1.1"]
    assert engine.handshake_errors == []  # the client certificate was sent and accepted


def test_without_verify_the_reaper_only_encrypts(serve, pki: Path) -> None:
    """``DOCKER_TLS`` without ``DOCKER_TLS_VERIFY``: the docker CLI checks nothing, nor do we."""
    engine = serve("wrong")
    assert reaper.remove_container(engine.url, _tls_dict(pki, verify=False), CONTAINER) == 204


@pytest.mark.parametrize("kind", ["unix", "plain"])
def test_the_reaper_without_tls(serve, kind: str) -> None:
    engine = serve(kind)
    assert reaper.remove_container(engine.url, None, CONTAINER) == 204
    assert engine.requests == [f"DELETE /v{transport.API_VERSION}/containers/{CONTAINER}"
                               "?force=1 HTTP/1.1"]


def _wait_for(engine: FakeEngine, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(engine.requests) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return engine.requests


def test_the_reaper_process_runs_from_its_source_alone(serve, pki: Path) -> None:
    """``python -I -S -c PROGRAM`` (no agentkernel importable) removes the container, then the
    volumes it was told to discard, once the owner's end of the pipe closes, over TLS."""
    engine = serve("right")
    fd = reaper.start(engine.url, CONTAINER, _tls_dict(pki), ["ws-upper", "ws-work"])
    time.sleep(0.2)
    assert engine.requests == []  # the owner is still here
    os.write(fd, reaper.DISCARD)
    os.close(fd)
    prefix = f"DELETE /v{transport.API_VERSION}"
    assert _wait_for(engine, 3) == [f"{prefix}/containers/{CONTAINER}?force=1 HTTP/1.1",
                                    f"{prefix}/volumes/ws-upper HTTP/1.1",
                                    f"{prefix}/volumes/ws-work HTTP/1.1"]


# -- the exec streams' TLS and docker-py's client: the same policy -----------------------------
def test_exec_streams_refuse_a_certificate_for_another_host(serve, pki: Path) -> None:
    engine = serve("wrong")
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        hijack("127.0.0.1", int(engine.url.rpartition(":")[2]), client_context(_tls(pki)),
               "/exec/x/start", {"Detach": False, "Tty": False}, 5)
    assert engine.requests == []


def test_exec_streams_upgrade_through_a_certificate_naming_the_address(serve,
                                                                        pki: Path) -> None:
    engine = serve("right")
    conn = hijack("127.0.0.1", int(engine.url.rpartition(":")[2]), client_context(_tls(pki)),
                  "/exec/x/start", {"Detach": False, "Tty": False}, 5)
    try:
        conn.sendall(b"ping")
        conn.shutdown_write()
        echoed = b""
        while chunk := conn.recv():
            echoed += chunk
    finally:
        conn.close()
    assert echoed == b"ping"
    assert engine.requests == [f"POST /v{transport.API_VERSION}/exec/x/start HTTP/1.1"]


def test_docker_py_refuses_a_certificate_for_another_host(serve, pki: Path) -> None:
    engine = serve("wrong")
    client, kind, reason = probe(Endpoint(engine.url, _tls(pki)), 5)
    assert client is None and "127.0.0.1" in reason, reason
    assert engine.requests == []


def test_docker_py_connects_through_a_certificate_naming_the_address(serve,
                                                                      pki: Path) -> None:
    engine = serve("right")
    client, kind, reason = probe(Endpoint(engine.url, _tls(pki)), 5)
    assert client is not None and kind == "docker", reason
    client.close()
    assert engine.requests == ["GET /_ping HTTP/1.1"]  # the one unversioned request


# -- one API version ---------------------------------------------------------------------------
def test_the_api_version_is_declared_once() -> None:
    """Every request names transport.API_VERSION: no other module declares one or spells a
    version of the engine's API."""
    declared, spelled = [], []
    for package in ("agentkernel", "agentkernel_kernel"):
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text("utf-8")
            name = str(path.relative_to(REPO))
            declared += [name] * len(re.findall(r"(?m)^\s*API_VERSION\s*[:=]", text))
            spelled += [name] * len(re.findall(r"""["']v?1\.[2-4]\d["']|/v1\.\d""", text))
    assert declared == ["agentkernel/engine/transport.py"]
    assert spelled == ["agentkernel/engine/transport.py"]
