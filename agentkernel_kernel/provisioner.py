"""A kernel provisioner with a warm pool: new kernels get a sandbox that is already running.

It launches the kernel process exactly as jupyter_client's LocalProvisioner does, and when the
pool has a warm sandbox it hands it over as a kernel's own start process would
(``agentkernel.handoff``): the description and the sandbox's sockets are written into one end of
a socket pair, whose other end the kernel process inherits (``pass_fds``, named in
``AGENTKERNEL_HANDOFF``); then it closes its own copies. Pools live in the
launching process (Jupyter server, papermill), one per engine, image and profile, and are
emptied when that process exits.
"""

from __future__ import annotations

import atexit
import os
import socket
from typing import Any, ClassVar

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Float, Int

from agentkernel.config import SandboxConfig
from agentkernel.errors import SandboxError
from agentkernel.handoff import hand_over, inherit
from agentkernel.pool import MAX_POOL_SIZE, WarmPool
from agentkernel.start import StartedSandbox

PoolKey = tuple[str, str, str, str]


class PoolProvisioner(LocalProvisioner):
    """LocalProvisioner plus a warm pool of sandboxes (kernelspec metadata sets pool_size)."""

    pool_size = Int(0, help=f"Warm sandboxes to keep ready (0 to {MAX_POOL_SIZE}).").tag(
        config=True
    )
    take_timeout = Float(
        0.0, help="Seconds to wait for a sandbox still starting in the pool (0: don't wait)."
    ).tag(config=True)

    _pools: ClassVar[dict[PoolKey, WarmPool]] = {}
    _warm: StartedSandbox | None = None
    _handoff_end: socket.socket | None = None  # the kernel's end of the handoff, until launched

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = await super().pre_launch(**kwargs)
        env = dict(kwargs.get("env") or os.environ)
        pool = self._pool_for(env)
        warm = pool.take(self.take_timeout) if pool is not None else None
        try:
            end = hand_over(*warm.handoff()) if warm is not None else None
        except (SandboxError, OSError, ValueError) as err:  # the kernel starts its own
            self.log.warning("agentkernel warm sandbox not handed over: %s", err)
            warm.discard()
            end = None
        if end is not None:
            env.update(inherit(end))
            kwargs["env"] = env
            kwargs["pass_fds"] = (end.fileno(),)
            self._warm, self._handoff_end = warm, end
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        warm, self._warm = self._warm, None
        end, self._handoff_end = self._handoff_end, None
        try:
            info = await super().launch_kernel(cmd, **kwargs)
        except Exception:
            if warm is not None:
                warm.discard()
            raise
        finally:
            if end is not None:
                end.close()  # the kernel process has its own copy
        if warm is not None:
            warm.release()  # the kernel process holds the sockets now
        return info

    def _pool_for(self, env: dict[str, str]) -> WarmPool | None:
        """The process-wide pool for the kernel's engine, image and profile."""
        if self.pool_size <= 0:
            return None
        overrides = {"image": env.get("AGENTKERNEL_IMAGE") or None,
                     "profile": env.get("AGENTKERNEL_PROFILE") or None}
        config = SandboxConfig(**{k: v for k, v in overrides.items() if v})
        engine = env.get("AGENTKERNEL_ENGINE") or "auto"
        # the engine's address too: one kind of engine may be local or remote (DOCKER_HOST)
        where = env.get("DOCKER_HOST") or env.get("CONTAINER_HOST") or ""
        key = (engine, where, config.image, config.profile)
        if key not in self._pools:
            try:
                self._pools[key] = WarmPool(self.pool_size, config, engine_kind=engine)
            except SandboxError as err:
                self.log.warning("agentkernel warm pool unavailable: %s", err)
                return None
        return self._pools[key]


@atexit.register
def _close_pools() -> None:
    for pool in PoolProvisioner._pools.values():
        pool.close()
