"""Hostile cells and isolation against Docker and Podman: what a sandboxed cell can reach.

Through the real kernel (or the Sandbox API): links out of a mounted folder, /proc and /sys,
forged protocol frames, each profile's isolation seen from inside, the engine's socket, home
mounts, and a runtime that does not exist. See SECURITY.md.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import socket
import time
from pathlib import Path

import pytest
from helpers.engines import labelled
from helpers.faultkit import one_line_error
from helpers.files import tree
from helpers.kernels import execute, running_kernel
from jupyter_client.blocking.client import BlockingKernelClient

from agentkernel.config import MODERATE_CAPS
from agentkernel.engine import Engine
from agentkernel.errors import ConfigError, SandboxError
from agentkernel.sandbox import Sandbox, shifted, tmpfs_mb
from agentkernel.sandbox.bundle_volume import MOUNT as BUNDLE_MOUNT

# linux/capability.h
CAPABILITY_BITS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}
# Files the engines themselves bind from the host into every container: the init binary,
# name resolution, and Podman's container marker.
ENGINE_FILES = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv",
                "/usr/sbin/docker-init", "/run/podman-init"}


# == against the engines =========================================================================
@pytest.fixture(autouse=True)
def _kernelspec(kernelspec: None) -> None:
    """The engine tests need the kernelspec, also those that start their own kernel."""


# -- the protocol ---------------------------------------------------------------------------------
FORGER = '''import json, os, struct, sys
body = json.dumps({"type": "done", "id": "1", "status": "ok", "execution_count": 99}).encode()
frame = struct.pack(">I", len(body)) + body
os.write(1, frame)
sys.stdout.write(frame.decode("latin-1") + "\\n")
os.system("printf '\\\\000\\\\000\\\\000\\\\017{\\"type\\":\\"done\\"}'")
'after'
'''


@pytest.mark.engine
def test_user_output_cannot_forge_frames(kc: BlockingKernelClient) -> None:
    run = execute(kc, FORGER)
    assert run.status == "ok" and run.result == {"text/plain": "'after'"}, run.messages
    assert run.stream().count('"type": "done"') == 2 and '{"type":"done"}' in run.stream()
    assert run.reply["content"]["execution_count"] != 99
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}


HIJACKER = '''import gc, os, struct, time
runner = next(o for o in gc.get_objects() if type(o).__name__ == "Runner")
body = b'{"type": "stream", "id": null, "text": 1}'
os.write(runner._pump._out, struct.pack(">I", len(body)) + body)
time.sleep(30)
'''


@pytest.mark.engine
def test_frames_written_to_the_protocol_fd_are_checked(kc: BlockingKernelClient) -> None:
    """User code shares the runner's process, so it can write to the protocol's fd itself:
    the host refuses malformed frames and ends the session, with a clear message."""
    started = time.monotonic()
    run = execute(kc, HIJACKER, timeout=60)
    one_line_error(run, "broke the protocol", "stream frame without a valid 'name'",
                   "%sandbox restart")
    assert time.monotonic() - started < 10
    assert execute(kc, "%sandbox restart").status == "ok"
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}


# -- paths -----------------------------------------------------------------------------------------
@pytest.mark.engine
@pytest.mark.parametrize("code, fragment", [
    ("%%sandbox_file /sys/kernel/agentkernel\ny", "/sys is off limits"),
    ("%%sandbox_file /proc/sys/kernel/agentkernel\ny", "/proc is off limits"),
    ("%%sandbox_file /dev/agentkernel\ny", "/dev is off limits"),
    ("%%sandbox_file //proc/1/x\ny", "/proc is off limits"),
    ("%sandbox download /proc/self/environ {tmp}/env", "/proc is off limits"),
    ("%sandbox download /./proc/1/environ {tmp}/env", "/proc is off limits"),
    ("%sandbox download /sys/fs/cgroup {tmp}/cg", "/sys is off limits"),
    ("%sandbox upload /etc/hostname /proc/agentkernel", "/proc is off limits"),
    ("%sandbox download /tmp/../proc/1/environ {tmp}/env", "must not contain '..'"),
])
def test_proc_sys_and_dev_are_refused(kc: BlockingKernelClient, tmp_path: Path, code: str,
                                      fragment: str) -> None:
    one_line_error(execute(kc, code.format(tmp=tmp_path)), fragment)
    assert not list(tmp_path.iterdir()), "nothing may be written on the host"


def no_links(root: Path) -> bool:
    return not any(Path(p).is_symlink() for p in tree(root)) and not root.is_symlink()


@pytest.mark.engine
def test_links_out_of_a_mounted_folder_stay_in_the_sandbox(engine_name: str, engine: Engine,
                                                           test_image: str,
                                                           tmp_path: Path) -> None:
    mounted, out = tmp_path / "mounted", tmp_path / "out"
    mounted.mkdir()
    out.mkdir()
    secret = tmp_path / "outside.txt"
    secret.write_text("host secret")
    stamp = secrets.token_hex(4)
    planted = Path("/etc") / f"agentkernel-evil-{stamp}"
    name = f"paths-{stamp}"
    links = (f"ln -s /etc /workspace/evil && ln -s {secret} /workspace/secret && "
             f"ln -s {tmp_path} /workspace/hostdir && ln -s /proc /workspace/proc")
    try:
        with running_kernel() as (_km, kc):
            assert execute(kc, f"%sandbox start -v {mounted}:/workspace --name {name}"
                           ).status == "ok"
            assert execute(kc, f"!{links}").status == "ok"
            assert os.readlink(mounted / "evil") == "/etc", "the link lands in the host folder"
            inside = ast.literal_eval(
                execute(kc, "open('/etc/hostname').read()").result["text/plain"])
            assert inside.strip() != socket.gethostname()

            # the engine resolves links in the container's own file system
            assert execute(kc, f"%sandbox download /workspace/evil/hostname {out}/h"
                           ).status == "ok"
            assert (out / "h").read_text() == inside
            whole = execute(kc, f"%sandbox download /workspace/evil {out}/evil")
            if whole.status == "ok":  # Podman copies the folder the link names, Docker the link
                assert (out / "evil" / "hostname").read_text() == inside
                assert no_links(out / "evil")
            else:
                one_line_error(whole, "link")
            for remote in ("/workspace/secret", "/workspace/hostdir/outside.txt"):
                one_line_error(execute(kc, f"%sandbox download {remote} {out}/leak"))
            assert not (out / "leak").exists()
            assert execute(kc, f"%sandbox download /workspace {out}/ws").status == "ok"
            assert no_links(out / "ws") and not list((out / "ws").iterdir())

            assert execute(kc, f"%%sandbox_file /workspace/evil/{planted.name}\npwned\n"
                           ).status == "ok"
            assert execute(kc, f"%sandbox upload {secret} /workspace/evil/{planted.name}.up"
                           ).status == "ok"
            assert not planted.exists() and not Path(f"{planted}.up").exists()
            assert execute(kc, f"open('/etc/{planted.name}').read()").result == {
                "text/plain": "'pwned\\n'"}, "the write went to the sandbox's own /etc"

            sandbox = Sandbox.connect(name, engine=engine)  # the same container, by the API
            assert sandbox.read_file("/workspace/evil/hostname").decode() == inside
            with pytest.raises(SandboxError):
                sandbox.read_file("/workspace/secret")
            with pytest.raises(SandboxError):
                sandbox.download("/workspace/secret", out / "leak")
            try:
                through_proc = sandbox.read_file("/workspace/proc/self/environ")
            except SandboxError:
                through_proc = b""
            assert through_proc == b"", "nothing of any process's environment comes out"
            assert not (out / "leak").exists() and no_links(out)
    finally:
        for leftover in (planted, Path(f"{planted}.up")):
            leftover.unlink(missing_ok=True)


# -- isolation, seen from inside ------------------------------------------------------------------
PROBE = '''import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
def first(*paths):
    for path in paths:
        if os.path.exists(path):
            return open(path).read().strip()
try:
    open("/agentkernel-probe", "w").close()
    os.remove("/agentkernel-probe")
    root_writable = True
except OSError:
    root_writable = False
print(json.dumps({
    "interfaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]),
    "cap_eff": int(status["CapEff"], 16), "no_new_privs": int(status["NoNewPrivs"]),
    "uid": os.getuid(), "root_writable": root_writable,
    "pids_max": first("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
    "mountinfo": open("/proc/self/mountinfo").read().splitlines(),
}))
'''


def probe(kc: BlockingKernelClient, profile: str) -> dict:
    """Start a sandbox of ``profile`` in the kernel and look around from inside it."""
    assert execute(kc, f"%sandbox start --profile {profile}").status == "ok"
    run = execute(kc, PROBE)
    assert run.status == "ok", run.messages
    return json.loads(run.stream())


def host_binds(mountinfo: list[str]) -> dict[str, str]:
    """Mount point -> host path of every mount backed by a host block device (a bind mount of
    a host file or folder); virtual file systems (proc, tmpfs, overlay...) have major 0."""
    binds = {}
    for line in mountinfo:
        fields = line.split()
        if fields[2].split(":")[0] != "0":
            binds[fields[4]] = fields[3]
    return binds


def mount_options(mountinfo: list[str], point: str) -> list[str]:
    """The per-mount options of the mount at ``point`` (``ro`` or ``rw`` first)."""
    for line in mountinfo:
        fields = line.split()
        if fields[4] == point:
            return fields[5].split(",")
    raise AssertionError(f"nothing mounted at {point}")


def mount_of(mountinfo: list[str], point: str) -> tuple[str, str]:
    """(file system type, super options) of the mount at ``point``."""
    for line in mountinfo:
        fields = line.split()
        if fields[4] == point:
            after = fields[fields.index("-") + 1:]
            return after[0], after[2]
    raise AssertionError(f"nothing mounted at {point}")


@pytest.mark.engine
@pytest.mark.parametrize("profile", ["restrictive", "moderate", "permissive"])
def test_profile_isolation_inside(kc: BlockingKernelClient, profile: str) -> None:
    seen = probe(kc, profile)
    binds = host_binds(seen["mountinfo"])
    bundle = binds.pop(BUNDLE_MOUNT, "")  # agentkernel's IPython: a named volume, read-only
    assert "/volumes/agentkernel-ipython-" in bundle, bundle
    assert mount_options(seen["mountinfo"], BUNDLE_MOUNT)[0] == "ro"
    # what hides credentials in the project: our own empty file, read-only
    hidden = {point for point, source in binds.items() if source.endswith("/agentkernel/hidden")}
    assert all(mount_options(seen["mountinfo"], point)[0] == "ro" for point in hidden)
    binds = {point: source for point, source in binds.items() if point not in hidden}
    assert set(binds) <= ENGINE_FILES, f"host mounts in a {profile} sandbox: {binds}"
    assert not [line for line in seen["mountinfo"] if ".sock" in line]
    project = str(Path.cwd())  # the kernel's folder, a git repository's root: the project
    if profile == "restrictive":  # no host mount at all, the notebook's folder included
        assert not [line for line in seen["mountinfo"] if line.split()[4] == project]
    else:  # the project, copy-on-write: an overlay whose lower layer is the host folder, or
        # (a Podman sandbox in a user namespace) its idmapped clone the kernel mounted
        fstype, options = mount_of(seen["mountinfo"], project)
        lower = options.split("lowerdir=")[1].split(",")[0]
        assert fstype == "overlay" and (lower == project or lower.startswith(
            f"{shifted.MOUNTS}/")), options
        assert "/volumes/agentkernel-ws-" in options.split("upperdir=")[1]
    if profile == "restrictive":
        assert seen["interfaces"] == ["lo"] and not seen["root_writable"]
        assert seen["cap_eff"] == 0 and seen["no_new_privs"] == 1 and seen["uid"] == 65534
        fstype, options = mount_of(seen["mountinfo"], "/tmp")
        assert fstype == "tmpfs" and f"size={tmpfs_mb(256) * 1024}k" in options, options
        assert seen["pids_max"] == "128"
    elif profile == "moderate":
        expected = sum(1 << CAPABILITY_BITS[cap] for cap in MODERATE_CAPS)
        assert seen["cap_eff"] == expected, f"{seen['cap_eff']:#x} != {expected:#x}"
        assert seen["no_new_privs"] == 1 and seen["pids_max"] == "512"
        assert seen["root_writable"] and "lo" in seen["interfaces"]
    else:
        assert seen["cap_eff"] & (1 << CAPABILITY_BITS["SYS_ADMIN"]) == 0
    assert execute(kc, "%sandbox start --profile moderate").status == "ok"


@pytest.mark.engine
@pytest.mark.parametrize("spec", ["/var/run/docker.sock:/x", "/run/podman:/x", "/:/host"])
def test_engine_socket_mount_refused_in_the_kernel(kc: BlockingKernelClient, spec: str) -> None:
    one_line_error(execute(kc, f"%sandbox start --profile permissive -v {spec}"),
                   "refusing to mount", "the engine's socket")
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}


@pytest.mark.engine
def test_home_mount_stays_read_only_inside(engine: Engine, test_image: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "me"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "host-cache"))  # the host's own records
    with pytest.raises(ConfigError, match="writable refused"):  # $HOME is never mounted
        Sandbox(image=test_image, volumes=[f"{home}:/h"], engine=engine)
    # unless the operator says so (unsafe_host_paths), and then read-only
    with Sandbox(image=test_image, volumes=[f"{home}:/h", f"{tmp_path}:/above"],
                 unsafe_host_paths=True, engine=engine) as sb:
        for target in ("/h", "/above"):
            assert "Read-only" in sb.exec(f"touch {target}/x").stderr, target
    assert not list(home.iterdir())


@pytest.mark.engine
def test_unknown_runtime_is_one_line_and_leaves_nothing(engine: Engine,
                                                        kc: BlockingKernelClient) -> None:
    name = f"rt-{secrets.token_hex(4)}"
    evalue = one_line_error(
        execute(kc, f"%sandbox start --runtime nonexistent-runtime --name {name}"),
        "nonexistent-runtime")
    print(f"\n{engine.kind}: {evalue}")
    assert labelled(engine, name) == []
    assert execute(kc, "1 + 1").result == {"text/plain": "2"}
