"""Sandbox configuration: the options, the profiles, the spec parsers, and their resolution.

``SandboxConfig`` (traitlets: one trait per sandbox option, whose help, flag, parser and
environment variable are its entry in :data:`options.OPTIONS`) resolves against a security
profile into an ``EffectiveConfig``; :mod:`.specs` parses what users type;
:mod:`.mounts` decides which host folders may be mounted.
"""

from __future__ import annotations

from . import options, specs
from .files import load_config_files
from .profiles import DEFAULT_PROFILE, MODERATE_CAPS, PROFILE_TABLE, PROFILES, Profile
from .sandbox_config import EffectiveConfig, SandboxConfig

__all__ = [
    "DEFAULT_PROFILE",
    "MODERATE_CAPS",
    "PROFILES",
    "PROFILE_TABLE",
    "EffectiveConfig",
    "Profile",
    "SandboxConfig",
    "load_config_files",
    "options",
    "specs",
]
