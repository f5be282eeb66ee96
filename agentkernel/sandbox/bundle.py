"""agentkernel's IPython for images that have none: what it holds, taken from this host.

The bundle is IPython, matplotlib-inline and comm, with every requirement any Python from 3.10
on would need (markers are evaluated for each of those versions), copied from the distributions
installed on the host (``importlib.metadata``). It must be pure Python, since the image's
interpreter and C library are not the host's: a compiled file fails the build, except the two
compiled parts known to be optional (``LEFT_OUT``). The runner reads its manifest to decide
whether the image's Python can run it (``runner/ipython_path.py``).

For an image whose matplotlib is older than 3.9 the volume also holds IPython 8 and
matplotlib-inline 0.1 (``sandbox/ipython8.py``) in a site folder of their own (``IPYTHON8_SITE``),
which the manifest names and the runner puts first; their requirements are the bundle's.

Every sandbox start needs the bundle's digest (it names the volume), and working it out costs
about 0.1 s (the requirement walk, ``packaging``), so it is cached in a user-private folder,
valid while each distribution's RECORD file is unchanged (an upgrade rewrites it).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.metadata and tarfile are imported when needed: every kernel
    import tarfile  # start imports this module, and most only read the cached digest
    from importlib import metadata

from ..cache import cache_dir, write_atomically
from ..errors import SandboxError
from . import ipython8

FORMAT = 5  # bump when the bundle's layout, digest or fill changes (5: IPython 8 compiled)
ROOTS = ("ipython", "matplotlib-inline", "comm")
TARGET_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
MANIFEST = "agentkernel-bundle.json"  # the name runner/ipython_path.py reads
# The folder inside the bundle that goes on the runner's sys.path, laid out as a prefix's site
# folder, so paths in tracebacks and warnings read as they do for any installed package.
SITE = "lib/python3/site-packages"
IPYTHON8_SITE = "ipython8/lib/python3/site-packages"  # IPython 8, for an older matplotlib
COMPILED_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
# Compiled parts of the requirement closure that are left out, and why it is safe to.
LEFT_OUT = {
    # a requirement of IPython 9 used only as a fallback of terminal image support (kitty.py),
    # which reads /proc itself on Linux and logs, not fails, without it
    "psutil": None,
    # wcwidth's optional C accelerator: the package falls back to its pure-Python code
    "wcwidth": "wcwidth/_wcwidth_c",
}


@dataclass(frozen=True)
class Bundle:
    """What the bundle holds and what the runner needs to know about it.

    Its digest comes from the distributions' names, versions and file records (cheap: every
    sandbox start asks for it); the files themselves are listed only to fill a volume.
    """

    dist_infos: tuple[str, ...]  # the distributions' .dist-info folders
    digest: str  # sha256 of the distributions' names, versions and file records
    ipython: str
    requires_python: str
    min_python: tuple[int, ...]

    @property
    def dists(self) -> tuple[metadata.Distribution, ...]:
        """The distributions in the bundle."""
        from importlib import metadata

        return tuple(metadata.PathDistribution(Path(path)) for path in self.dist_infos)

    @property
    def distributions(self) -> tuple[tuple[str, str], ...]:
        """(name, version) of every distribution in the bundle."""
        return tuple((d.metadata["Name"], d.version) for d in self.dists)

    def files(self) -> list[tuple[str, Path]]:
        """(path under SITE, the host's file) of every file; SandboxError on a compiled one."""
        files = [entry for dist in self.dists for entry in _files(dist)]
        if any(relative.endswith(COMPILED_SUFFIXES) for relative, _ in files):
            raise SandboxError("agentkernel's IPython bundle would hold a compiled file")
        return files

    def manifest(self) -> dict:
        """What ``agentkernel-bundle.json`` says."""
        return {"format": FORMAT, "digest": self.digest, "site": SITE, "ipython": self.ipython,
                "requires_python": self.requires_python, "min_python": list(self.min_python),
                "distributions": dict(self.distributions)}

    def ipython8_files(self, folder: Path) -> list[tuple[str, Path]]:
        """(path under IPYTHON8_SITE, the host's file) of IPython 8 installed in ``folder``;
        SandboxError when it requires something the bundle lacks."""
        dists = ipython8.distributions(folder)
        have = {canonicalize_name(name) for name, _ in self.distributions}
        have |= {canonicalize_name(d.metadata["Name"]) for d in dists}
        for dist in dists:
            lacking = sorted(_requires(dist, self.min_python) - have)
            if lacking:
                raise SandboxError(
                    f"{dist.metadata['Name']} {dist.version} (for images whose matplotlib is "
                    f"older than 3.9) requires {', '.join(lacking)}, which this host's IPython "
                    f"{self.ipython} does not: agentkernel cannot run it with this host's bundle")
        return [entry for dist in dists for entry in _files(dist)]

    def tar(self, with_ipython8: Path | None = None) -> bytes:
        """The bundle as a tar: ``site/...`` and the manifest, owned by root, world-readable;
        with IPython 8 (installed in folder ``with_ipython8``) under IPYTHON8_SITE too."""
        import tarfile

        members = [(f"{SITE}/{relative}", source) for relative, source in self.files()]
        manifest = self.manifest()
        if with_ipython8 is not None:
            members += [(f"{IPYTHON8_SITE}/{relative}", source)
                        for relative, source in self.ipython8_files(with_ipython8)]
            manifest["ipython8"] = {"site": IPYTHON8_SITE, "ipython": ipython8.IPYTHON}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            folders: set[str] = set()
            for arcname, source in members:
                _add_folders(tar, folders, arcname)
                data = source.read_bytes()
                tar.addfile(_info(arcname, len(data), int(source.stat().st_mtime)),
                            io.BytesIO(data))
            manifest = json.dumps(manifest, indent=1).encode()
            tar.addfile(_info(MANIFEST, len(manifest), 0), io.BytesIO(manifest))
        return buf.getvalue()


def _info(name: str, size: int, mtime: int, kind: bytes = b"0") -> tarfile.TarInfo:
    """A tar member: a file (kind REGTYPE, b"0") or a folder (DIRTYPE, b"5")."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type = size, mtime, kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    return info


def _add_folders(tar: tarfile.TarFile, done: set[str], arcname: str) -> None:
    """Add the folders above ``arcname`` (once each), so they are world-readable."""
    parts = arcname.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        folder = "/".join(parts[:depth])
        if folder not in done:
            done.add(folder)
            tar.addfile(_info(folder, 0, 0, b"5"))


def canonicalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _environments() -> list[dict[str, str]]:
    """Marker environments of a Linux CPython for every target Python version."""
    from packaging.markers import default_environment

    base = default_environment()
    base.update(sys_platform="linux", platform_system="Linux", os_name="posix",
                implementation_name="cpython", platform_python_implementation="CPython")
    return [{**base, "python_version": v, "python_full_version": f"{v}.0", "extra": ""}
            for v in TARGET_PYTHONS]


def _requires(dist: metadata.Distribution, oldest: tuple[int, ...]) -> set[str]:
    """The names ``dist`` requires on some target Python from ``oldest`` on."""
    from packaging.requirements import Requirement

    environments = [env for env in _environments()
                    if tuple(map(int, env["python_version"].split("."))) >= oldest[:2]]
    names = set()
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or any(requirement.marker.evaluate(env)
                                             for env in environments):
            names.add(canonicalize_name(requirement.name))
    return names


def closure(roots: tuple[str, ...] = ROOTS) -> list[metadata.Distribution]:
    """The host's distributions of ``roots`` and of everything they require on some target
    Python, in a stable order; SandboxError naming what the host lacks."""
    from importlib import metadata

    from packaging.requirements import Requirement

    environments = _environments()
    found: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found or name in missing:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        found[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or any(requirement.marker.evaluate(env)
                                                 for env in environments):
                todo.append(requirement.name)
    missing = [name for name in missing if name not in LEFT_OUT]
    if missing:
        raise SandboxError(
            f"agentkernel's IPython bundle needs {', '.join(sorted(missing))} installed on this "
            "host (pip install agentkernel installs them)")
    return [found[name] for name in sorted(found) if name not in LEFT_OUT
            or LEFT_OUT[name] is not None]


def _files(dist: metadata.Distribution) -> list[tuple[str, Path]]:
    """The files of ``dist`` that belong in the bundle: its package and metadata files, no
    scripts, no byte code, no optional compiled part."""
    name = canonicalize_name(dist.metadata["Name"])
    skipped = LEFT_OUT.get(name)
    chosen = []
    for record in dist.files or []:
        relative = str(record).replace("\\", "/")
        if not _bundled(relative) or (skipped and relative.startswith(skipped)):
            continue
        if relative.endswith(COMPILED_SUFFIXES):
            raise SandboxError(
                f"agentkernel's IPython bundle must be pure Python, but {dist.metadata['Name']} "
                f"{dist.version} on this host has a compiled file ({relative})")
        source = Path(str(record.locate()))
        if source.is_file():
            chosen.append((relative, source))
    return chosen


def _bundled(relative: str) -> bool:
    """True for a file of a distribution's record that may go in the bundle: not a script
    outside site-packages (``../``), not byte code."""
    return not (relative.startswith("../") or "__pycache__/" in relative
                or relative.endswith(".pyc"))


def _fingerprint(dist: metadata.Distribution) -> bytes:
    """What identifies an installed distribution: name, version and the record lines (path,
    hash, size) of its files that go in the bundle. Not the others: a console script's record
    hashes its first line, the path of this environment's python."""
    record = dist.read_text("RECORD") or "\n".join(str(f) for f in dist.files or [])
    lines = [line for line in record.splitlines() if _bundled(line.split(",", 1)[0])]
    return (f"{dist.metadata['Name']}=={dist.version}\n" + "\n".join(lines) + "\n").encode()


def min_python(requires_python: str) -> tuple[int, ...]:
    """The lowest Python a ``Requires-Python`` value allows (its ``>=`` bound), as a tuple."""
    from packaging.specifiers import SpecifierSet

    bounds = [tuple(int(p) for p in spec.version.split(".") if p.isdigit())
              for spec in SpecifierSet(requires_python or "") if spec.operator in (">=", "~=")]
    return max(bounds) if bounds else (3, 0)


def _dist_info(dist: metadata.Distribution) -> Path:
    """The .dist-info folder of an installed distribution; SandboxError without one."""
    for entry in dist.files or []:
        if entry.name == "RECORD" and entry.parent.name.endswith(".dist-info"):
            return Path(str(entry.locate())).parent
    raise SandboxError(f"{dist.metadata['Name']} on this host has no RECORD file: agentkernel "
                       "copies only distributions installed with their file list (pip)")


def _computed() -> Bundle:
    """The bundle worked out from the installed distributions."""
    from importlib import metadata

    dists = closure()
    digest = hashlib.sha256(f"agentkernel bundle format {FORMAT}\n".encode())
    digest.update(json.dumps(ipython8.PINNED).encode())  # what an older matplotlib gets
    for dist in dists:
        digest.update(_fingerprint(dist))
    ipython = metadata.distribution("ipython")
    requires = ipython.metadata.get("Requires-Python") or ""
    return Bundle(dist_infos=tuple(str(_dist_info(d)) for d in dists),
                  digest=digest.hexdigest(), ipython=ipython.version,
                  requires_python=requires, min_python=min_python(requires))


def _cache_file() -> Path:
    """This interpreter's cache file (one per Python environment)."""
    key = hashlib.sha256(f"{sys.prefix}\n{sys.version}".encode()).hexdigest()[:16]
    return cache_dir() / f"ipython-bundle-{key}.json"


def _stamp(record: Path) -> list:
    info = record.stat()
    return [str(record), info.st_mtime_ns, info.st_size]


def _rules() -> str:
    """What decides the bundle besides the installed files: a change makes the cache stale."""
    return json.dumps([FORMAT, ROOTS, TARGET_PYTHONS, sorted(LEFT_OUT.items()), ipython8.PINNED])


def _from_cache() -> Bundle | None:
    """The cached bundle when every distribution it names is unchanged, else None."""
    try:
        cached = json.loads(_cache_file().read_text())
        if cached.get("rules") != _rules():
            return None
        for stamp in cached["records"]:
            if _stamp(Path(stamp[0])) != stamp:
                return None
        dist_infos = tuple(str(Path(stamp[0]).parent) for stamp in cached["records"])
        return Bundle(dist_infos=dist_infos, digest=cached["digest"], ipython=cached["ipython"],
                      requires_python=cached["requires_python"],
                      min_python=tuple(cached["min_python"]))
    except (OSError, ValueError, KeyError, TypeError, SandboxError):
        return None


def _to_cache(bundle: Bundle) -> None:
    records = [Path(path) / "RECORD" for path in bundle.dist_infos]
    entry = {"rules": _rules(), "records": [_stamp(r) for r in records],
             "digest": bundle.digest, "ipython": bundle.ipython,
             "requires_python": bundle.requires_python, "min_python": list(bundle.min_python)}
    try:
        write_atomically(_cache_file(), json.dumps(entry))
    except (OSError, SandboxError):
        pass  # no cache: the next process works it out again


@functools.cache
def host_bundle() -> Bundle:
    """The bundle made of this host's distributions (once per process, cached across them)."""
    cached = _from_cache()
    if cached is not None:
        return cached
    bundle = _computed()
    _to_cache(bundle)
    return bundle
