"""The security profiles: what each sets by default and what it forbids."""

from __future__ import annotations

from dataclasses import dataclass

PROFILES = ("permissive", "moderate", "restrictive")
"""From the least to the most confined."""
DEFAULT_PROFILE = "moderate"


@dataclass(frozen=True)
class Profile:
    """What a security profile sets by default and what it forbids."""

    name: str
    network: bool
    memory_mb: int | None
    cpus: float | None
    read_only: bool
    cap_add: tuple[str, ...] | None  # None: the engine's default set, no cap-drop
    no_new_privileges: bool
    pids_limit: int | None
    allow_host_mounts: bool
    allow_network: bool
    user: str | None = None
    tmpfs: tuple[str, ...] = ()


# The few capabilities moderate keeps: enough for package managers and file ownership as root.
MODERATE_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                 "NET_BIND_SERVICE")

PROFILE_TABLE = {
    "permissive": Profile("permissive", True, None, None, False, None, False, None, True, True),
    "moderate": Profile("moderate", True, 512, 1.0, False, MODERATE_CAPS, True, 512, True, True),
    "restrictive": Profile(
        "restrictive", False, 256, 0.5, True, (), True, 128, False, False,
        user="65534:65534", tmpfs=("/tmp",),
    ),
}
