"""The AgentKernel Sandbox kernelspec: build it, write it, install it.

Modelled on ipykernel's ``kernelspec.py``: small pure functions (argv -> kernel dict -> spec
directory) and :func:`install` through jupyter_client's ``KernelSpecManager``. The logos live in
``agentkernel_kernel/resources``; ``kernel.json`` is generated here, never kept as a file.

Command line: ``python -m agentkernel_kernel install [--user | --sys-prefix | --prefix P]
[--name N] [--display-name D] [--pool-size N] [--remote-hosts H1,H2]``. With ``--remote-hosts``
the spec is for Jupyter Enterprise Gateway: its DistributedProcessProxy places each kernel on
one of those hosts and starts ``agentkernel_kernel.gateway_launcher`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from agentkernel.config.policy import POLICY_OPTION

PROVISIONER_NAME = "agentkernel-pool"
KERNEL_NAME = "agentkernel"
DISPLAY_NAME = "AgentKernel Sandbox"
RESOURCES = Path(__file__).parent / "resources"
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")
DISTRIBUTED_PROXY = "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy"


def make_argv(executable: str | None = None, policy_file: str | None = None) -> list[str]:
    """The command Jupyter runs to start the kernel, with the ``{connection_file}`` placeholder;
    with ``policy_file`` (a file name in the kernelspec's folder) the kernel reads its policy
    from there (``{resource_dir}`` is that folder). ``-P``: the kernel never imports from
    its working directory (the notebook's folder), where a cell may have left a module."""
    argv = [executable or sys.executable, "-P", "-m", "agentkernel_kernel", "-f",
            "{connection_file}"]
    return argv + ([POLICY_OPTION, f"{{resource_dir}}/{policy_file}"] if policy_file else [])


def gateway_argv(executable: str | None = None, policy_file: str | None = None) -> list[str]:
    """The command Enterprise Gateway runs on the host it chose, with its placeholders (the
    kernelspec's folder must be at the same place on every host, as EG asks of its own)."""
    argv = [executable or sys.executable, "-P", "-m", "agentkernel_kernel.gateway_launcher",
            "--kernel-id", "{kernel_id}", "--port-range", "{port_range}",
            "--response-address", "{response_address}", "--public-key", "{public_key}"]
    return argv + ([POLICY_OPTION, f"{{resource_dir}}/{policy_file}"] if policy_file else [])


def kernel_dict(
    executable: str | None = None,
    display_name: str = DISPLAY_NAME,
    env: Mapping[str, str] | None = None,
    pool_size: int = 0,
    policy_file: str | None = None,
    remote_hosts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The contents of ``kernel.json``.

    ``language`` is "python" so that papermill and frontends treat cells as Python; interrupts
    arrive as SIGINT (the kernel forwards them into the sandbox); ``env`` is added to the
    kernel's environment. With ``pool_size`` > 0 the kernel is launched by the warm-pool
    provisioner (``agentkernel_kernel.provisioner``), which needs agentkernel installed in the
    process that launches kernels (the Jupyter server, papermill...). With ``remote_hosts``
    (empty: the gateway's own ``--EnterpriseGatewayApp.remote_hosts``) Enterprise Gateway's
    DistributedProcessProxy runs :func:`gateway_argv` on one of them.
    """
    metadata: dict[str, Any] = {"debugger": False}
    if pool_size:
        metadata["kernel_provisioner"] = {
            "provisioner_name": PROVISIONER_NAME, "config": {"pool_size": pool_size}}
    argv = make_argv(executable, policy_file)
    if remote_hosts is not None:
        hosts = {"remote_hosts": ",".join(remote_hosts)} if remote_hosts else {}
        metadata["process_proxy"] = {"class_name": DISTRIBUTED_PROXY, "config": hosts}
        argv = gateway_argv(executable, policy_file)
    return {
        "argv": argv,
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "env": dict(env or {}),
        "metadata": metadata,
    }


def write_kernel_spec(
    path: str | Path | None = None,
    executable: str | None = None,
    display_name: str = DISPLAY_NAME,
    env: Mapping[str, str] | None = None,
    pool_size: int = 0,
    policy: str | Path | None = None,
    remote_hosts: Sequence[str] | None = None,
) -> str:
    """Write ``kernel.json`` and the logos into ``path`` (a new temporary directory if None),
    and a copy of the operator's ``policy`` file (checked first) when given.

    Returns the directory, ready for ``KernelSpecManager.install_kernel_spec``.
    """
    target = Path(path) if path else Path(tempfile.mkdtemp(suffix="_kernels")) / KERNEL_NAME
    target.mkdir(parents=True, exist_ok=True)
    policy_file = None
    if policy is not None:
        policy_file = f"policy{Path(policy).suffix or '.json'}"
        check_policy_file(Path(policy))
        shutil.copyfile(policy, target / policy_file)
    for logo in LOGOS:
        shutil.copyfile(RESOURCES / logo, target / logo)
    spec = kernel_dict(executable, display_name, env, pool_size, policy_file, remote_hosts)
    (target / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    return str(target)


def install(
    user: bool = False,
    prefix: str | None = None,
    sys_prefix: bool = False,
    kernel_name: str = KERNEL_NAME,
    display_name: str = DISPLAY_NAME,
    env: Mapping[str, str] | None = None,
    kernel_spec_manager: KernelSpecManager | None = None,
    pool_size: int = 0,
    policy: str | Path | None = None,
    remote_hosts: Sequence[str] | None = None,
) -> str:
    """Install the kernelspec and return the directory it went to.

    Where: the user's Jupyter data dir (``user``), ``prefix/share/jupyter/kernels``
    (``prefix``, or ``sys.prefix`` with ``sys_prefix``), else the system-wide one. At most one
    of the three may be given. An existing spec of the same name is replaced.
    """
    if sum((user, prefix is not None, sys_prefix)) > 1:
        raise ValueError("choose at most one of user, prefix and sys_prefix")
    manager = kernel_spec_manager or KernelSpecManager()
    with tempfile.TemporaryDirectory(suffix="_kernels") as staging:
        source = write_kernel_spec(Path(staging) / kernel_name, display_name=display_name,
                                   env=env, pool_size=pool_size, policy=policy,
                                   remote_hosts=remote_hosts)
        return manager.install_kernel_spec(
            source,
            kernel_name=kernel_name,
            user=user,
            prefix=sys.prefix if sys_prefix else prefix,
        )


def check_policy_file(path: Path) -> None:
    """Refuse (SystemExit with one line) a policy file that cannot be read or used."""
    from agentkernel.config.files import load_config_file
    from agentkernel.config.policy import SandboxPolicy
    from agentkernel.errors import SandboxError

    try:
        SandboxPolicy(config=load_config_file(path))
    except SandboxError as err:
        raise SystemExit(f"error: the policy file is not usable: {err}") from None


def _is_root() -> bool:
    """True when running as root (POSIX), where a system-wide install is allowed."""
    try:
        return os.geteuid() == 0
    except AttributeError:  # Windows has no euid: never treat the user as root
        return False


def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``install`` (also ``agentkernel install``): where, names, pool."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--user", action="store_true", help="install for this user (default unless root)"
    )
    where.add_argument(
        "--sys-prefix", action="store_true", help=f"install into sys.prefix ({sys.prefix})"
    )
    where.add_argument("--prefix", metavar="P", help="install into P/share/jupyter/kernels")
    parser.add_argument(
        "--name", metavar="N", default=KERNEL_NAME, help=f"kernel name (default {KERNEL_NAME})"
    )
    parser.add_argument(
        "--display-name",
        metavar="D",
        default=DISPLAY_NAME,
        help=f"name shown in menus (default {DISPLAY_NAME})",
    )
    parser.add_argument(
        "--pool-size", metavar="N", type=int, default=0,
        help="keep N warm sandboxes in the launching process (default 0: no pool)",
    )
    parser.add_argument(
        "--policy", metavar="FILE",
        help="the operator's policy for these kernels (JSON or Python traitlets config with "
             "c.SandboxPolicy.*), copied into the kernelspec; no cell can loosen it",
    )
    parser.add_argument(
        "--remote-hosts", metavar="H1,H2", default=None,
        help="a spec for Enterprise Gateway: its DistributedProcessProxy places kernels on these "
             "hosts ('' for the gateway's own --EnterpriseGatewayApp.remote_hosts)",
    )


def install_from_args(args: argparse.Namespace) -> str:
    """Install as the parsed ``install`` options say; print and return where."""
    system_wide = not (args.user or args.sys_prefix or args.prefix)
    dest = install(
        user=args.user or (system_wide and not _is_root()),
        prefix=args.prefix,
        sys_prefix=args.sys_prefix,
        kernel_name=args.name,
        display_name=args.display_name,
        pool_size=args.pool_size,
        policy=args.policy,
        remote_hosts=None if args.remote_hosts is None
        else [h.strip() for h in args.remote_hosts.split(",") if h.strip()],
    )
    print(f"Installed kernelspec {args.name} in {dest}")
    return dest


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m agentkernel_kernel install``: install the kernelspec and say where."""
    parser = argparse.ArgumentParser(
        prog="python -m agentkernel_kernel install",
        description=f"Install the {DISPLAY_NAME} kernelspec for Jupyter.",
        epilog=f"Remove it with: jupyter kernelspec remove {KERNEL_NAME}",
    )
    add_install_arguments(parser)
    install_from_args(parser.parse_args(argv))
