"""What a sandbox looks like now: state, image, limits, ports, uptime."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.base import PortMapping
from .core import SandboxCore


@dataclass
class SandboxStatus:
    """A snapshot of a sandbox as the engine reports it."""

    name: str
    running: bool
    state: str
    image: str
    engine: str
    profile: str
    cpus: float | None
    memory_mb: int | None
    network: bool
    ports: list[PortMapping] = field(default_factory=list)
    uptime_s: float | None = None
    ip: str | None = None
    persistent: bool = False
    container_id: str = ""

    def __str__(self) -> str:
        limits = (
            f"cpus {self.cpus:g}" if self.cpus else "cpus unlimited",
            f"memory {self.memory_mb} MB" if self.memory_mb else "memory unlimited",
        )
        lines = [
            f"sandbox {self.name}: {self.state} ({self.engine}, profile {self.profile}"
            f"{', persistent' if self.persistent else ''})",
            f"  image   {self.image}",
            f"  limits  {', '.join(limits)}",
            f"  network {'on' if self.network else 'off'}" + (f", ip {self.ip}" if self.ip else ""),
        ]
        if self.uptime_s is not None:
            lines.append(f"  uptime  {self.uptime_s:.0f} s")
        lines += [f"  port    {p}" for p in self.ports]
        return "\n".join(lines)


class Status(SandboxCore):
    """status(), ports and ip."""

    @property
    def ports(self) -> list[PortMapping]:
        """Ports as the engine bound them (host ports filled in when auto-assigned)."""
        info = self._inspect()
        return list(info.ports) if info else []

    @property
    def ip(self) -> str | None:
        info = self._inspect()
        return info.ip if info else None

    def status(self) -> SandboxStatus:
        """Running state, image, limits, ports and uptime."""
        eff = self.effective
        info = self._inspect() if self._attachment is not None else None
        common = dict(name=eff.name, engine=self.engine.kind, profile=eff.profile.name,
                      persistent=eff.persistent,
                      # verified by resize(); Podman's inspect keeps the first values
                      cpus=eff.cpus, memory_mb=eff.memory_mb)
        if info is None:
            state = "not started" if self._attachment is None else "removed"
            return SandboxStatus(running=False, state=state, image=eff.image,
                                 network=eff.network, **common)
        return SandboxStatus(
            running=info.running, state=info.state, image=info.image or eff.image,
            network=info.network, ports=list(info.ports), uptime_s=info.uptime_s, ip=info.ip,
            container_id=info.id, **common,
        )
