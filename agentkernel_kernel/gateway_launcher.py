"""Launch the kernel for Jupyter Enterprise Gateway's remote process proxies.

Enterprise Gateway (EG) starts a remote kernel through its kernelspec's argv, on the host it
chose (``DistributedProcessProxy``: over SSH), and waits for the kernel's connection info on a
response address. This launcher speaks EG's launcher protocol (version 1, as EG's own
``launch_ipykernel.py``) around our unchanged kernel app:

1. start the sandbox at once (``start_child.begin_first_sandbox``, as
   ``python -m agentkernel_kernel`` does), then let the kernel app
   bind its five ZeroMQ ports (within ``--port-range`` when one is given);
2. send the connection info, plus pid, pgid and a communication port, to
   ``--response-address``: JSON encrypted with a fresh AES key (ECB, PKCS#7), that key encrypted
   with the gateway's RSA ``--public-key`` (PKCS#1 v1.5), all base64;
3. listen on the communication port: ``{"signum": N}`` sends signal N to this process (0 only
   answers: the gateway polls that way), ``{"shutdown": 1}`` ends the listener;
4. run the kernel until it is shut down.

``python -m agentkernel_kernel.gateway_launcher --kernel-id ID --response-address IP:PORT
--public-key KEY [--port-range LO..HI] [--ip ADDRESS] [--agentkernel-policy FILE]`` (the policy
option as for ``python -m agentkernel_kernel``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import random
import secrets
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentkernel.manager import SandboxManager

LAUNCHER_VERSION = 1
PORT_TRIES = 20
KERNEL_PORTS = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
log = logging.getLogger("agentkernel.gateway_launcher")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentkernel_kernel.gateway_launcher",
        description="Start the AgentKernel kernel for Jupyter Enterprise Gateway.")
    parser.add_argument("--kernel-id", required=True, help="the gateway's id of this kernel")
    parser.add_argument("--response-address", required=True, metavar="IP:PORT",
                        help="where the gateway waits for the connection info")
    parser.add_argument("--public-key", required=True,
                        help="the gateway's RSA public key (base64 DER, as EG passes it)")
    parser.add_argument("--port-range", default="0..0", metavar="LO..HI",
                        help="ports the kernel may listen on (0..0: any)")
    parser.add_argument("--ip", default="0.0.0.0",
                        help="address the kernel listens on (default 0.0.0.0, as EG's own "
                             "launcher: the gateway connects to the host it chose)")
    args = parser.parse_args(argv)
    args.response = split_address(args.response_address)
    args.ports = parse_port_range(args.port_range)
    return args


def split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"invalid --response-address {text!r}: expected IP:PORT")
    return host, int(port)


def parse_port_range(text: str) -> tuple[int, int]:
    """``LO..HI`` -> (LO, HI); (0, 0) means any port."""
    low, sep, high = text.partition("..")
    if not sep or not low.isdigit() or not high.isdigit() or int(low) > int(high):
        raise SystemExit(f"invalid --port-range {text!r}: expected LO..HI, e.g. 40000..41000")
    return int(low), int(high)


def bind_in_range(ip: str, ports: tuple[int, int]) -> socket.socket:
    """A TCP socket bound on ``ip`` to a free port of the range (any port for 0..0)."""
    for _ in range(PORT_TRIES):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        port = random.randint(*ports) if ports != (0, 0) else 0
        try:
            sock.bind((ip, port))
            return sock
        except OSError:
            sock.close()
    raise SystemExit(f"no free port in {ports[0]}..{ports[1]} after {PORT_TRIES} tries")


def initial_connection_file(kernel_id: str, ip: str, ports: tuple[int, int]) -> str:
    """A connection file with a fresh key; ports 0 (the kernel app binds free ones) unless a
    range is imposed, then free ports of the range."""
    chosen = [0] * len(KERNEL_PORTS)
    if ports != (0, 0):
        held = [bind_in_range(ip, ports) for _ in KERNEL_PORTS]
        chosen = [s.getsockname()[1] for s in held]
        for sock in held:
            sock.close()
    info = {"ip": ip, "transport": "tcp", "signature_scheme": "hmac-sha256",
            "key": secrets.token_hex(16), "kernel_name": "",
            **dict(zip(KERNEL_PORTS, chosen, strict=True))}
    fd, path = tempfile.mkstemp(prefix=f"kernel-{kernel_id}-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle)
    return path


def encrypt_payload(info: dict[str, Any], public_key: str) -> bytes:
    """EG's version-1 payload: AES-ECB connection info, the AES key under the gateway's RSA
    key (PKCS#1 v1.5), all base64 JSON."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    aes_key = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(json.dumps(info).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()
    conn_info = encryptor.update(padded) + encryptor.finalize()
    gateway_key = load_der_public_key(base64.b64decode(public_key))
    encrypted_key = gateway_key.encrypt(aes_key, PKCS1v15())  # type: ignore[union-attr]
    payload = {"version": LAUNCHER_VERSION, "key": base64.b64encode(encrypted_key).decode(),
               "conn_info": base64.b64encode(conn_info).decode()}
    return base64.b64encode(json.dumps(payload).encode())


def send_connection_info(info: dict[str, Any], args: argparse.Namespace) -> None:
    with socket.create_connection(args.response, timeout=30) as sock:
        sock.sendall(encrypt_payload(info, args.public_key))


def serve_requests(listener: socket.socket) -> None:
    """The communication port: signals for this process, until a shutdown request."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            data = b""
            with contextlib.suppress(OSError):
                while chunk := conn.recv(4096):
                    data += chunk
        try:
            request = json.loads(data or b"{}")
        except ValueError:
            log.warning("ignored a malformed gateway request: %r", data[:80])
            continue
        signum = int(request.get("signum") or 0)
        if signum:
            log.info("gateway sends signal %d", signum)
            os.kill(os.getpid(), signum)
        if request.get("shutdown"):
            listener.close()
            return


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(name)s] %(message)s")
    from agentkernel.config.policy import take_policy_option

    arguments = ["launcher", *(sys.argv[1:] if argv is None else argv)]
    policy_file = take_policy_option(arguments)
    args = parse_args(arguments[1:])
    # The sandbox comes up while ipykernel imports, as with ``python -m agentkernel_kernel``.
    from agentkernel_kernel.start_child import begin_first_sandbox

    def make_manager() -> SandboxManager:
        from agentkernel.manager import SandboxManager

        return SandboxManager(policy_file=policy_file)

    manager = begin_first_sandbox(make_manager)
    from agentkernel_kernel.app import AgentKernelApp

    connection_file = initial_connection_file(args.kernel_id, args.ip, args.ports)
    app = AgentKernelApp.instance(manager=manager)
    app.initialize(["-f", connection_file])
    with open(app.abs_connection_file) as handle:
        info = json.load(handle)
    listener = bind_in_range(args.ip, args.ports)
    listener.listen(8)
    info.update(pid=os.getpid(), pgid=os.getpgid(0), comm_port=listener.getsockname()[1],
                kernel_id=args.kernel_id)
    send_connection_info(info, args)
    threading.Thread(target=serve_requests, args=(listener,), name="gateway-requests",
                     daemon=True).start()
    try:
        app.start()
    finally:
        with contextlib.suppress(OSError):
            os.remove(app.abs_connection_file)


if __name__ == "__main__":
    sys.exit(main())
