"""Operator policies for tests.

The functional engine tests run their kernels under a "lab" policy that allows what those tests
exercise (the pytest temporary folders writable, every profile, persistent sandboxes, limits up
to the machine); the security tests start kernels under the default policy (``DEFAULT``: no
policy file) or under stricter ones, and attack them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agentkernel.config.policy import POLICY_ENV

DEFAULT = {POLICY_ENV: ""}
"""Environment for a kernel under the default policy (no policy file)."""
HOST_CPUS = os.cpu_count() or 1
"""The default policy's most CPUs for a sandbox: all of this machine's."""
HOST_MEMORY_SHARE_MB = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2 // 2**20
"""The default policy's most memory for a sandbox, in MB: half of this machine's."""


def write_policy(path: Path, **rules: Any) -> Path:
    """A JSON policy file with these SandboxPolicy rules."""
    path.write_text(json.dumps({"SandboxPolicy": rules}, indent=1))
    return path


def lab_rules(writable: Path) -> dict[str, Any]:
    """What the functional tests need: ``writable`` (pytest's temporary folders) read-write,
    every profile (so the permissive one's lack of limits too)."""
    return {
        "max_profile": "permissive",
        "host_folders": ["{notebook}:ro", f"{writable}:rw"],
        "named_volumes": ["agentkernel-test-*"],
        "allow_persistent": True,
        "allow_connect": True,
        "runtimes": ["nonexistent-runtime"],
    }


def env_with(policy: Path) -> dict[str, str]:
    """Environment for a kernel under the policy file ``policy``."""
    return {POLICY_ENV: str(policy)}
