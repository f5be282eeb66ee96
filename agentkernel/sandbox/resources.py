"""Live limits: resize a running sandbox and read back what its cgroup enforces."""

from __future__ import annotations

import logging

from ..config import specs
from ..errors import ResizeFailed, SandboxError, one_line
from .execution import Execution

log = logging.getLogger(__name__)

CGROUP_LIMITS_SCRIPT = (
    "if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max; "
    "cat /sys/fs/cgroup/memory.max; else "
    "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) "
    "$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); "
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; fi"
)


class Resources(Execution):
    """resize() and cgroup_limits()."""

    def resize(self, cpus: float, memory_mb: int) -> None:
        """Change CPU and memory limits live, verified by reading the cgroup inside.

        Raises ConfigError for limits out of range and ResizeFailed (saying why) when the
        engine cannot apply them.
        """
        cpus = specs.parse_cpus(cpus)
        memory_mb = specs.parse_memory_mb(memory_mb)
        self._check_limits(cpus, memory_mb)
        try:
            with self._errors(f"resizing sandbox {self.name}"):
                self.engine.update_limits(self.container_id, cpus, memory_mb)
        except SandboxError as err:
            if self.effective.runtime:  # gVisor's runsc has no `update` (its usage is the error)
                raise ResizeFailed(
                    f"live resize not possible: runtime {self.effective.runtime!r} cannot "
                    "change a running sandbox's limits (start one with the limits wanted: "
                    "%sandbox start --cpus N --memory MB)") from None
            raise ResizeFailed(f"live resize not possible: {err}") from None
        seen = self.cgroup_limits()
        if seen != (cpus, memory_mb):
            raise ResizeFailed(
                "live resize not possible: the engine accepted the update but the cgroup "
                f"shows cpus={seen[0]}, memory={seen[1]} MB"
            )
        self.effective = self.effective.replace(cpus=cpus, memory_mb=memory_mb)

    def cgroup_limits(self) -> tuple[float | None, int | None]:
        """(cpus, memory MB) as the container's cgroup enforces them; None = unlimited."""
        result = self.exec(["/bin/sh", "-c", CGROUP_LIMITS_SCRIPT])
        lines = result.stdout.split("\n")
        if not result.ok or len(lines) < 2:
            raise SandboxError(f"cannot read the cgroup limits: {one_line(result.stderr)}")
        return _parse_cpu_line(lines[0]), _parse_memory_line(lines[1])


def _parse_cpu_line(line: str) -> float | None:
    quota, _, period = line.strip().partition(" ")
    if quota in ("max", "-1") or not period:
        return None
    return round(int(quota) / int(period), 4)


def _parse_memory_line(line: str) -> int | None:
    value = line.strip()
    if value == "max" or not value.isdigit() or int(value) >= 1 << 60:
        return None
    return int(value) // (1024 * 1024)
