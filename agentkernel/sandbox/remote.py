"""What a sandbox on a remote engine cannot do as on a local one: mount a host folder.

An engine is remote when its URL is not a ``unix://`` socket (:attr:`Engine.remote`): a bind
mount's source is then a path on the engine's host, not on ours, so it is refused before the
container is created, with what to do instead.
"""

from __future__ import annotations

from ..config import EffectiveConfig
from ..engine import Engine
from ..errors import ConfigError


def refuse_host_mounts_on_remote_engine(eff: EffectiveConfig, engine: Engine) -> None:
    """ConfigError when ``eff`` mounts a host folder and ``engine`` is remote."""
    folders = [mount.source for mount in eff.binds if mount.is_bind]
    folders += [eff.workspace] if eff.workspace else []
    if folders and engine.remote:
        raise ConfigError(
            f"cannot mount host folder {folders[0]}: the engine at {engine.base_url} is "
            "remote (not a unix:// socket), where that path names the engine host's files; "
            "copy the folder in instead (%sandbox upload, Sandbox.upload) or use a named volume"
        )
