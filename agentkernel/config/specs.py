"""Pure parsers for the spec strings users type: ports, volumes, env pairs and sizes."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import ConfigError

PORT_USAGE = "[host_ip:][host_port:]container_port[/tcp|/udp]"
VOLUME_USAGE = "name:/path[:ro|:rw] or /host/path:/path[:ro|:rw]"
DEFAULT_HOST_IP = "127.0.0.1"


@dataclass(frozen=True)
class PortSpec:
    """A requested port publication; ``host_port`` None means auto-assigned."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = DEFAULT_HOST_IP
    host_port: int | None = None

    def __str__(self) -> str:
        host = f"{self.host_ip}:{self.host_port or ''}:"
        return f"{host}{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class VolumeSpec:
    """A named volume or a host bind mounted at ``target``."""

    source: str
    target: str
    read_only: bool = False

    @property
    def is_bind(self) -> bool:
        return self.source.startswith(("/", "."))


def _is_decimal(text: str) -> bool:
    """True for ASCII digits only: ``str.isdigit`` also accepts '²' and other digits that
    ``int()`` refuses."""
    return text.isascii() and text.isdigit()


def _port_number(text: str, spec: str, what: str) -> int:
    if not _is_decimal(text) or not 1 <= int(text) <= 65535:
        raise ConfigError(
            f"invalid port spec {spec!r}: {what} must be 1-65535, got {text!r} "
            f"(expected {PORT_USAGE})"
        )
    return int(text)


def parse_port(spec: str) -> PortSpec:
    """Parse ``[host_ip:][host_port:]container_port[/udp]``; published on 127.0.0.1 by default."""
    text = spec.strip()
    protocol = "tcp"
    if "/" in text:
        text, protocol = text.rsplit("/", 1)
        protocol = protocol.lower()
        if protocol not in ("tcp", "udp"):
            raise ConfigError(
                f"invalid port spec {spec!r}: protocol must be tcp or udp (expected {PORT_USAGE})"
            )
    host_ip = DEFAULT_HOST_IP
    if text.startswith("["):  # [::1]:8080:80
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"invalid port spec {spec!r}: unclosed '[' (expected {PORT_USAGE})")
        host_ip, text = text[1:end], text[end + 1 :].lstrip(":")
        parts = text.split(":")
    else:
        parts = text.split(":")
        if len(parts) == 3:
            host_ip = parts.pop(0)
    if len(parts) > 2 or not parts[-1]:
        raise ConfigError(f"invalid port spec {spec!r}: expected {PORT_USAGE}")
    try:
        ipaddress.ip_address(host_ip)
    except ValueError:
        raise ConfigError(
            f"invalid port spec {spec!r}: host_ip {host_ip!r} is not an IP address "
            f"(expected {PORT_USAGE})"
        ) from None
    container_port = _port_number(parts[-1], spec, "container_port")
    host_port = None
    if len(parts) == 2 and parts[0]:
        host_port = _port_number(parts[0], spec, "host_port")
    return PortSpec(container_port, protocol, host_ip, host_port)


def parse_volume(spec: str) -> VolumeSpec:
    """Parse ``name:/path[:ro]`` (named volume) or ``/host:/path[:ro]`` (bind mount)."""
    parts = spec.split(":")
    read_only = False
    if len(parts) == 3:
        mode = parts.pop()
        if mode not in ("ro", "rw"):
            raise ConfigError(
                f"invalid volume spec {spec!r}: mode must be ro or rw (expected {VOLUME_USAGE})"
            )
        read_only = mode == "ro"
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"invalid volume spec {spec!r}: expected {VOLUME_USAGE}")
    source, target = parts
    if not target.startswith("/"):
        raise ConfigError(
            f"invalid volume spec {spec!r}: the container path must be absolute "
            f"(expected {VOLUME_USAGE})"
        )
    named = not source.startswith(("/", "."))
    if named and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", source):
        raise ConfigError(
            f"invalid volume spec {spec!r}: volume name {source!r} may hold only letters, "
            f"digits, '_', '.' and '-' (expected {VOLUME_USAGE})"
        )
    return VolumeSpec(source, target, read_only)


def parse_env_pair(pair: str) -> tuple[str, str]:
    """Split ``KEY=VALUE``; the key must be a valid variable name."""
    key, sep, value = pair.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise ConfigError(
            f"invalid env entry {pair!r}: expected KEY=VALUE with KEY a variable name"
        )
    return key, value


_SIZE_UNITS = {"": 1, "m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024}


def parse_memory_mb(value: str | int | float) -> int:
    """Megabytes from ``1024``, ``512m`` or ``2g``; must be positive."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text, re.ASCII)
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ConfigError(f"invalid memory {value!r}: expected megabytes like 1024, 512m or 2g")
    amount = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if amount > 1 << 40:
        raise ConfigError(f"invalid memory {value!r}: far too large (expected megabytes)")
    megabytes = int(amount)
    if megabytes < 6:
        raise ConfigError(f"invalid memory {value!r}: must be at least 6 MB")
    return megabytes


def parse_cpus(value: str | int | float) -> float:
    """CPUs as a positive number, e.g. ``0.5`` or ``2``."""
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid cpus {value!r}: expected a number like 0.5 or 2") from None
    if cpus != cpus or cpus == float("inf"):
        raise ConfigError(f"invalid cpus {value!r}: expected a finite number like 0.5 or 2")
    if not cpus > 0:
        raise ConfigError(f"invalid cpus {value!r}: must be greater than 0")
    return cpus


def parse_count(value: str | int) -> int:
    """A whole number of at least 1, e.g. a process limit."""
    text = str(value).strip()
    if not _is_decimal(text) or not 1 <= int(text) <= 1 << 31:
        raise ConfigError(f"invalid count {value!r}: expected a whole number from 1 to 2^31")
    return int(text)


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def parse_hostname(text: str) -> str:
    """A host name: dot-separated labels of letters, digits and '-', at most 253 characters."""
    if len(text) > 253 or not _HOSTNAME.fullmatch(text):
        raise ConfigError(
            f"invalid hostname {text!r}: expected labels of letters, digits and '-' "
            "separated by dots, like lab or lab.example"
        )
    return text
