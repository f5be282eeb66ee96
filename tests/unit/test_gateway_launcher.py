"""The Enterprise Gateway launcher's protocol pieces: its arguments and its encrypted reply.

The reply is decrypted here the way Enterprise Gateway's ResponseManager does it (version 1:
RSA PKCS#1 v1.5 for the AES key, AES-ECB with PKCS#7 padding for the connection info); the
gateway tests run the real gateway against it.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agentkernel_kernel.gateway_launcher import encrypt_payload, parse_args
from agentkernel_kernel.kernelspec import DISTRIBUTED_PROXY, kernel_dict


def test_reply_decrypts_as_the_gateway_decrypts_it() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {"shell_port": 5001, "key": "abc", "kernel_id": "k-1", "comm_port": 6000}
    payload = json.loads(base64.b64decode(encrypt_payload(info, base64.b64encode(der).decode())))
    assert payload["version"] == 1
    aes_key = key.decrypt(base64.b64decode(payload["key"]), PKCS1v15())
    decryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).decryptor()
    padded = decryptor.update(base64.b64decode(payload["conn_info"])) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    assert json.loads(unpadder.update(padded) + unpadder.finalize()) == info


def test_arguments_as_the_gateway_fills_them() -> None:
    spec = kernel_dict("/venv/bin/python", remote_hosts=["host-a", "host-b"])
    assert spec["metadata"]["process_proxy"] == {
        "class_name": DISTRIBUTED_PROXY, "config": {"remote_hosts": "host-a,host-b"}}
    filled = [arg.format(kernel_id="k-1", port_range="40000..41000",
                         response_address="10.0.0.1:8877", public_key="KEY")
              for arg in spec["argv"][spec["argv"].index("-m") + 2:]]
    args = parse_args(filled)
    assert (args.kernel_id, args.response, args.ports, args.public_key) == (
        "k-1", ("10.0.0.1", 8877), (40000, 41000), "KEY")


@pytest.mark.parametrize("argv, fragment", [
    (["--response-address", "nowhere"], "invalid --response-address 'nowhere'"),
    (["--response-address", "1.2.3.4:5", "--port-range", "9..1"], "invalid --port-range '9..1'"),
])
def test_bad_arguments_named(argv: list[str], fragment: str) -> None:
    with pytest.raises(SystemExit, match=fragment):
        parse_args(["--kernel-id", "k", "--public-key", "K", *argv])
