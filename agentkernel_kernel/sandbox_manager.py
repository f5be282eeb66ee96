"""The kernel process's SandboxManager, made the same way by the kernel and its start child."""

from __future__ import annotations

import sys
from pathlib import Path

from agentkernel.config.policy import take_policy_option
from agentkernel.config.workspace import workspace_id
from agentkernel.manager import SandboxManager
from agentkernel_kernel.early_listen import connection_file


def for_this_kernel() -> SandboxManager:
    """The manager of this kernel: the policy file its kernelspec names (taken off
    ``sys.argv``), and a workspace named after its connection file, which a restart keeps."""
    return SandboxManager(policy_file=take_policy_option(sys.argv),
                          workspace_id=workspace_id(connection_file(sys.argv[1:]),
                                                    Path.cwd().resolve()))
