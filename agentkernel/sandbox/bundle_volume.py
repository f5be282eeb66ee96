"""The read-only volume that carries agentkernel's IPython into sandboxes of one image.

One named volume per (bundle digest, image id), filled once: a short-lived helper container of
that image (network off, all capabilities dropped, labelled, tied to this process by a stdin
lifeline) receives the bundle through the engine's archive API and runs the image's own
``python3 -m compileall``, so byte code exists for that interpreter (a read-only mount cannot
cache it later). Every later sandbox of the image mounts the volume read-only at ``MOUNT``.

Per image, because the image's python writes into the volume during the fill: a hostile image
can only spoil the volume that sandboxes of that same image use. Per image also because what it
holds depends on the image: the helper's python first reports the image's matplotlib version,
and one older than 3.9 gets IPython 8 too (``sandbox/ipython8.py``).

Fills are serialised per volume on this machine with a lock file; a fill that died half-way
(its marker file is still there) is thrown away and done again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..cache import cache_dir
from ..engine import Engine
from ..errors import EngineError, SandboxError, one_line
from ..tarball import single_file_tar
from . import ipython8
from .bundle import IPYTHON8_SITE, SITE, Bundle, host_bundle
from .request import HOLD_COMMAND, LABEL_OWNER, MB, owner_label

log = logging.getLogger(__name__)

MOUNT = "/opt/agentkernel"
COMPLETE = ".complete"  # written last into the volume; runner/ipython_path.py checks it
LABEL_BUNDLE = "agentkernel.bundle"
LABEL_IMAGE = "agentkernel.bundle.image"
LABEL_IPYTHON = "agentkernel.bundle.ipython"
LABEL_FILL = "agentkernel.bundle.fill"  # on the helper container: the volume it fills
HELPER_MEMORY_MB = 512
HELPER_PIDS = 256
COMPILE_TIMEOUT = 600  # seconds compileall may take on a slow machine
PROBE_TIMEOUT = 60  # seconds the image's python may take to tell its matplotlib version
PROBE_LIMIT = 64  # bytes of its answer read
# The image's matplotlib version, from its package metadata (nothing imported), or nothing.
MATPLOTLIB_PROBE = ("import importlib.metadata as m\n"
                    "try:\n    print(m.version('matplotlib'))\nexcept Exception:\n    pass\n")


def volume_name(bundle: Bundle, image_id: str) -> str:
    """``agentkernel-ipython-<bundle digest>-<image id>`` (shortened)."""
    return f"agentkernel-ipython-{bundle.digest[:16]}-{image_id.split(':')[-1][:16]}"


def ensure_volume(engine: Engine, image: str, labels: Mapping[str, str] | None = None,
                  image_id: str | None = None) -> str:
    """The name of the filled bundle volume for ``image`` (whose id the caller may know),
    filling it first if needed. ``labels`` go on the helper container (the caller's own
    labels, e.g. a test run's)."""
    bundle = host_bundle()
    image_id = image_id or engine.image_id(image)
    name = volume_name(bundle, image_id)
    with _fill_lock(name) as interrupted:
        existing = engine.volume_labels(name)
        if existing is not None and not interrupted.exists():
            return name
        if existing is not None:
            log.warning("bundle volume %s was left half-filled; filling it again", name)
            engine.remove_volume(name)
        interrupted.touch()
        started = time.monotonic()
        fill(engine, image, image_id, name, bundle, labels or {})
        interrupted.unlink()
        log.info("filled bundle volume %s for %s in %.1f s", name, image,
                 time.monotonic() - started)
    return name


@contextlib.contextmanager
def _fill_lock(name: str) -> Iterator[Path]:
    """Hold this machine's lock for volume ``name``; yield the path of its "fill under way"
    marker (present: a fill died half-way)."""
    folder = cache_dir()
    with open(folder / f"{name}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield folder / f"{name}.filling"
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fill(engine: Engine, image: str, image_id: str, name: str, bundle: Bundle,
         labels: Mapping[str, str]) -> None:
    """Create volume ``name`` and fill it with ``bundle`` through a helper of ``image``."""
    engine.create_volume(name, {LABEL_BUNDLE: bundle.digest, LABEL_IMAGE: image_id,
                                LABEL_IPYTHON: bundle.ipython})
    helper = lifeline = None
    try:
        helper = engine.create_container(_helper_request(image, name, labels),
                                         f"agentkernel-fill-{secrets.token_hex(4)}")
        lifeline = engine.attach_stdin(helper)
        engine.start_container(helper)
        older = ipython8.needed(_image_matplotlib(engine, helper))
        with_ipython8 = ipython8.ensure_installed() if older else None
        if not engine.put_archive(helper, MOUNT, bundle.tar(with_ipython8)):
            raise EngineError(f"the engine could not write into {MOUNT} of the fill helper")
        _compile(engine, helper, [SITE, IPYTHON8_SITE] if older else [SITE])
        engine.put_archive(helper, MOUNT, single_file_tar(COMPLETE, bundle.digest.encode()))
    except BaseException:
        _remove_helper(engine, helper, lifeline)
        helper = lifeline = None
        with contextlib.suppress(SandboxError):
            engine.remove_volume(name)
        raise
    finally:
        _remove_helper(engine, helper, lifeline)


def _helper_request(image: str, volume: str, labels: Mapping[str, str]) -> dict:
    """A container of ``image`` that waits on its stdin, with ``volume`` writable at MOUNT."""
    return {
        "Image": image,
        "Entrypoint": HOLD_COMMAND,
        "Cmd": [],
        "User": "0",
        "WorkingDir": "/",
        "Labels": {**labels, LABEL_FILL: volume, LABEL_OWNER: owner_label()},
        "OpenStdin": True,
        "StdinOnce": True,
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "HostConfig": {
            "AutoRemove": True,
            "Init": True,
            "NetworkMode": "none",
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": HELPER_PIDS,
            "Memory": HELPER_MEMORY_MB * MB,
            "MemorySwap": HELPER_MEMORY_MB * MB,
            "Mounts": [{"Type": "volume", "Source": volume, "Target": MOUNT,
                        "ReadOnly": False}],
        },
    }


def _compile(engine: Engine, helper: str, sites: list[str]) -> None:
    """Run the image's ``python3 -m compileall`` over the bundle's ``sites`` (the volume is
    read-only in sandboxes: what is not compiled here is compiled at every start, 40-100 ms
    for IPython 8's). Best effort: without python3 the sandbox cannot run anyway (and says
    so), and without byte code IPython still imports, only slower."""
    argv = ["python3", "-m", "compileall", "-q", "-j", "0",
            *(f"{MOUNT}/{site}" for site in sites)]
    try:
        stream = engine.open_exec(helper, argv, user="0", stdin=False)
    except SandboxError as err:
        log.warning("bundle volume: cannot run compileall: %s", err)
        return
    try:
        stream.set_timeout(COMPILE_TIMEOUT)
        while stream.read_frame() is not None:
            pass
        code = _exit_code(stream)
    except (OSError, TimeoutError) as err:
        log.warning("bundle volume: compileall did not finish: %s", err)
        return
    finally:
        stream.close()
    if code:
        log.warning("bundle volume: compileall exited with %s: %s", code,
                    one_line(stream.stderr_tail(), 300))


def _image_matplotlib(engine: Engine, helper: str) -> str | None:
    """The version of the image's matplotlib as the image's python3 reads it from package
    metadata; None without one (or without python3, whose sandboxes fail anyway)."""
    try:
        stream = engine.open_exec(helper, ["python3", "-c", MATPLOTLIB_PROBE], user="0",
                                  stdin=False)
    except SandboxError as err:
        log.warning("bundle volume: cannot ask the image for its matplotlib: %s", err)
        return None
    answer = b""
    try:
        stream.set_timeout(PROBE_TIMEOUT)
        while len(answer) < PROBE_LIMIT:
            chunk = stream.read()
            if not chunk:
                break
            answer += chunk
    except (OSError, TimeoutError) as err:
        log.warning("bundle volume: the image did not tell its matplotlib: %s", err)
    finally:
        stream.close()
    return answer[:PROBE_LIMIT].decode("ascii", "replace").strip() or None


def _exit_code(stream) -> int | None:
    for _ in range(50):
        code = stream.exit_code()
        if code is not None:
            return code
        time.sleep(0.02)
    return None


def _remove_helper(engine: Engine, helper: str | None, lifeline) -> None:
    if lifeline is not None:
        with contextlib.suppress(OSError):
            lifeline.close()
    if helper is not None:
        with contextlib.suppress(SandboxError):
            engine.remove_container(helper)


def bundle_volumes(engine: Engine) -> list[tuple[str, dict[str, str]]]:
    """Every bundle volume of the engine: (name, labels)."""
    return [(v.name, dict(v.labels)) for v in engine.list_volumes([LABEL_BUNDLE])]


def stale_reason(engine: Engine, labels: Mapping[str, str]) -> str | None:
    """Why a bundle volume with ``labels`` is old (another bundle, or its image is gone);
    None when sandboxes of this host would use it."""
    try:
        current = host_bundle().digest
    except SandboxError:
        current = None
    if labels.get(LABEL_BUNDLE) != current:
        return f"IPython {labels.get(LABEL_IPYTHON, '?')} bundle of an older agentkernel or host"
    try:
        engine.image_id(labels.get(LABEL_IMAGE, ""))
    except SandboxError:
        return "its image is gone"
    return None


__all__ = ["MOUNT", "bundle_volumes", "ensure_volume", "stale_reason", "volume_name"]
