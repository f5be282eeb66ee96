"""The Podman backend: Podman's Docker-compatible API, and where it differs, its libpod API.

Podman 4.3 (Debian 12) differs in three ways that matter here: it serves no compatible
``update`` endpoint (live resize goes through ``/libpod/containers/{id}/update``), its
compatible create ignores ``HostConfig.Runtime`` (checked after create), and an image name
without a registry lives under ``localhost/``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, EngineError, one_line
from .base import ContainerGone
from .docker import API_VERSION, CPU_PERIOD, DockerEngine


class PodmanEngine(DockerEngine):
    """Podman through its compatible API, with its own endpoints where that falls short."""

    kind = "podman"

    def update_limits(self, container_id: str, cpus: float, memory_mb: int) -> None:
        try:
            super().update_limits(container_id, cpus, memory_mb)
            return
        except ContainerGone:
            if self.inspect_container(container_id) is None:
                raise
        quota, memory = int(cpus * CPU_PERIOD), memory_mb * 1024 * 1024
        body = {"cpu": {"quota": quota, "period": CPU_PERIOD},
                "memory": {"limit": memory, "swap": memory}}
        self._libpod("post", f"/containers/{container_id}/update", "resizing the sandbox",
                     json=body)

    def check_runtime(self, container_id: str, runtime: str | None) -> None:
        """Refuse a container created with another OCI runtime than the one asked for: the
        compatible API ignores the option, so a sandbox meant for gVisor or Kata would
        silently run under the default runtime."""
        if runtime is None:
            return
        info = self._libpod("get", f"/containers/{container_id}/json",
                            "checking the sandbox's runtime")
        actual = info.get("OCIRuntime")
        if actual != runtime:
            raise ConfigError(
                f"runtime {runtime!r} not applied: podman created the container with "
                f"{actual!r} (its Docker-compatible API ignores the runtime option; make "
                f"{runtime!r} podman's default runtime in containers.conf, or use Docker)"
            )

    def _libpod(self, method: str, path: str, action: str, **kwargs: Any) -> dict[str, Any]:
        """Call one of Podman's own endpoints (``/libpod/...``); its JSON answer, or {}."""
        url = f"{self.api.base_url}/v{API_VERSION}/libpod{path}"
        with self._errors(action):
            answer = self.api.request(method, url, timeout=self.api.timeout, **kwargs)
        if answer.status_code == 404:
            raise ContainerGone(f"{action}: {one_line(answer.text)}")
        if not answer.ok:
            raise EngineError(f"{action} failed: {answer.status_code} {one_line(answer.text)}")
        json_answer = answer.headers.get("Content-Type", "").startswith("application/json")
        return answer.json() if json_answer and answer.content else {}

    def _local_repo(self, repo: str) -> str:
        """A registry-less name goes under ``localhost/``, as Podman stores it."""
        first = repo.split("/", 1)[0]
        has_registry = "/" in repo and ("." in first or ":" in first or first == "localhost")
        return repo if has_registry else f"localhost/{repo}"
