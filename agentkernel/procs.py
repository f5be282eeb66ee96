"""Which process a pid names on this host: its start time and this boot's id, read from /proc."""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, field 22 of /proc/PID/stat), None
    when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def boot_id() -> str | None:
    """This boot's id (/proc/sys/kernel/random/boot_id), None when it cannot be read."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
