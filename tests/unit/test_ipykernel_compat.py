"""agentkernel_kernel.ipykernel_compat: ipykernel's private names we call are there, with the
signatures we call them with, on the installed ipykernel; a version that changes one fails at
import with a line naming the version and the name."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import ipykernel
import pytest
import zmq
from ipykernel.heartbeat import Heartbeat
from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel

from agentkernel_kernel import ipykernel_compat
from agentkernel_kernel.ipykernel_compat import HookedApp, HookedHeartbeat, HookedKernel


def test_the_installed_ipykernel_has_what_we_call() -> None:
    found = ipykernel_compat.problems()
    assert not found, f"ipykernel {ipykernel.__version__} broke agentkernel's kernel: {found}"


def test_a_missing_private_is_named_with_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(IPKernelApp, "_try_bind_socket")
    with pytest.raises(ImportError) as raised:
        ipykernel_compat.check("6.99.0")
    message = str(raised.value)
    assert message.startswith("agentkernel's kernel does not support ipykernel 6.99.0: ")
    assert "IPKernelApp._try_bind_socket is missing" in message and "\n" not in message


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Heartbeat, "_try_bind_socket", lambda self, port: None)
    monkeypatch.setattr(Kernel, "_at_shutdown", lambda self: None)
    found = ipykernel_compat.problems()
    assert any(p.startswith("Heartbeat._try_bind_socket(self, port) is not (self)")
               for p in found), found
    assert "Kernel._at_shutdown is not a coroutine function" in found


def test_ipykernel_7_without_subshells_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(Kernel, "_supports_kernel_subshells"):
        monkeypatch.delattr(Kernel, "_supports_kernel_subshells")
    assert "Kernel._supports_kernel_subshells is not a property" in (
        ipykernel_compat.problems("7.0.0"))
    assert not [p for p in ipykernel_compat.problems("6.29.0") if "subshells" in p]


def test_the_import_itself_fails_on_a_breaking_version() -> None:
    """What a user of a breaking ipykernel sees: one line at the kernel's import."""
    code = textwrap.dedent("""
        from ipykernel.kernelbase import Kernel
        del Kernel._at_shutdown
        import agentkernel_kernel.app
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"ImportError: agentkernel's kernel does not support ipykernel "
                    f"{ipykernel.__version__}: Kernel._at_shutdown is missing; Kernel._at_"
                    "shutdown is not a coroutine function"), result.stderr


def test_the_hooks_are_called_where_ipykernel_binds() -> None:
    calls = []

    class App(HookedApp):
        def before_bind(self, socket: zmq.Socket, port: int) -> None:
            calls.append(("app", port))

    class Beat(HookedHeartbeat):
        def before_bind(self) -> None:
            calls.append(("heartbeat", self.port))

    app = App(transport="tcp", ip="127.0.0.1")
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    try:
        port = app._bind_socket(sock, 0)
        beat = Beat(context, ("tcp", "127.0.0.1", 0))
        beat.socket = context.socket(zmq.ROUTER)
        beat._bind_socket()
        beat.socket.close(linger=0)
    finally:
        sock.close(linger=0)
        context.term()
    assert calls == [("app", 0), ("heartbeat", beat.port)] and port > 0


def test_the_kernel_hooks() -> None:
    kernel = HookedKernel()
    assert kernel.allow_stdin is False
    kernel.allow_stdin = True
    assert kernel.allow_stdin is True and kernel._allow_stdin is True
    assert kernel.supports_subshells is False  # no shell channel thread here
