"""ipykernel's private names the kernel builds on, in one place, checked when it loads.

ipykernel offers four things the kernel needs only under private names:

- ``IPKernelApp._try_bind_socket(s, port)`` and ``Heartbeat._try_bind_socket()``: where each
  channel binds, so that it takes over the port's early listening socket (``early_listen.py``);
- ``Kernel._at_shutdown()``: ipykernel's last step after the shutdown reply, after which the
  process may exit;
- ``Kernel._allow_stdin``: whether the request being run may ask its frontend for input (what
  ``Kernel.raw_input`` and ``Kernel.getpass`` read);
- ``Kernel._supports_kernel_subshells`` (ipykernel 7): whether kernel_info claims subshells.

They are named here only: the kernel's classes derive from :class:`HookedApp`,
:class:`HookedHeartbeat` and :class:`HookedKernel`, which call public-named methods of theirs.
At import, :func:`problems` compares each with what we call (``inspect.signature``) and an
ImportError names ipykernel's version and what changed, instead of a kernel that starts and
then misbehaves (tests/unit/test_ipykernel_compat.py). jupyter_client is used through public
names only (``jupyter_client.session.json_packer``, ``jupyter_client.jsonutil``).
"""

from __future__ import annotations

import inspect
from typing import Any

import ipykernel
import zmq
from ipykernel.heartbeat import Heartbeat
from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel
from traitlets import Bool

VERSION = str(ipykernel.__version__)
SUBSHELLS_FROM = 7  # the major version whose Kernel has _supports_kernel_subshells

# (owner, private name, the parameters we call it with; None: not a function)
PRIVATES: tuple[tuple[type, str, tuple[str, ...] | None], ...] = (
    (IPKernelApp, "_try_bind_socket", ("self", "s", "port")),
    (Heartbeat, "_try_bind_socket", ("self",)),
    (Kernel, "_at_shutdown", ("self",)),
    (Kernel, "_allow_stdin", None),
)


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def problems(version: str = VERSION) -> list[str]:
    """What differs from the private names we call, in this ipykernel (empty: nothing)."""
    found = []
    for owner, name, params in PRIVATES:
        attr = inspect.getattr_static(owner, name, None)
        where = f"{owner.__name__}.{name}"
        if attr is None:
            found.append(f"{where} is missing")
        elif params is None:
            if not isinstance(attr, Bool):
                found.append(f"{where} is a {type(attr).__name__}, not a Bool trait")
        elif list(inspect.signature(attr).parameters) != list(params):
            found.append(f"{where}{inspect.signature(attr)} is not ({', '.join(params)})")
    if not inspect.iscoroutinefunction(inspect.getattr_static(Kernel, "_at_shutdown", None)):
        found.append("Kernel._at_shutdown is not a coroutine function")
    heartbeat = list(inspect.signature(Heartbeat.__init__).parameters)
    if heartbeat[:3] != ["self", "context", "addr"]:
        found.append(f"Heartbeat{inspect.signature(Heartbeat.__init__)} does not start "
                     "(self, context, addr)")
    subshells = inspect.getattr_static(Kernel, "_supports_kernel_subshells", None)
    if _major(version) >= SUBSHELLS_FROM and not isinstance(subshells, property):
        found.append("Kernel._supports_kernel_subshells is not a property")
    return found


def check(version: str = VERSION) -> None:
    """ImportError naming ipykernel's version and what changed, if anything did."""
    found = problems(version)
    if found:
        raise ImportError(f"agentkernel's kernel does not support ipykernel {version}: "
                          + "; ".join(found))


check()


class HookedApp(IPKernelApp):
    """IPKernelApp whose sockets call :meth:`before_bind` just before they bind."""

    def before_bind(self, socket: zmq.Socket, port: int) -> None:
        """Called with each channel's socket and port before ipykernel binds it."""

    def _try_bind_socket(self, s: zmq.Socket, port: int) -> Any:
        self.before_bind(s, port)
        return super()._try_bind_socket(s, port)


class HookedHeartbeat(Heartbeat):
    """ipykernel's heartbeat, whose socket calls :meth:`before_bind` just before it binds."""

    def before_bind(self) -> None:
        """Called with ``self.socket`` made, before ipykernel binds it."""

    def _try_bind_socket(self) -> Any:
        self.before_bind()
        return super()._try_bind_socket()


class HookedKernel(Kernel):
    """ipykernel's Kernel with its stdin permission and shutdown step under public names."""

    @property
    def allow_stdin(self) -> bool:
        """Whether the request being run may ask its frontend for input."""
        return bool(self._allow_stdin)

    @allow_stdin.setter
    def allow_stdin(self, allowed: bool) -> None:
        self._allow_stdin = allowed

    @property
    def supports_subshells(self) -> bool:
        """ipykernel 7's kernel subshells are on (never on ipykernel 6)."""
        return bool(getattr(self, "_supports_kernel_subshells", False))

    async def after_shutdown(self) -> None:
        """Called once ipykernel's own last shutdown step has run."""

    async def _at_shutdown(self) -> None:
        await super()._at_shutdown()
        await self.after_shutdown()
