"""Build a Python image from Debian packages: debootstrap a root, trim it, import it.

The root folder is streamed to the engine as a tar made on the fly (no tar file on disk),
through the engine's image import (see ``Engine.import_image``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from .engine import Engine
from .engine.base import split_reference
from .errors import ConfigError, SandboxError

ProgressFn = Callable[[str], None]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
IMAGE_LABEL = "agentkernel.image"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_CHANGES = (
    'CMD ["python3"]',
    f"ENV PATH={IMAGE_PATH}",
    "ENV LANG=C.UTF-8",
    f"LABEL {IMAGE_LABEL}=1",
)
# Folders whose contents are dropped from the image (the folders themselves stay).
TRIMMED = ("usr/share/doc", "usr/share/man", "var/cache/apt", "var/lib/apt/lists")
LOCALES = "usr/share/locale"
PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?")
SUITE_RE = re.compile(r"[a-z][a-z0-9-]*")
NAME_RE = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
TAG_RE = re.compile(r"\w[\w.-]{0,127}")


def image_exists(engine: Engine, tag: str) -> bool:
    """True when ``tag`` names an image the engine has (Podman: ``localhost/`` too)."""
    return engine.image_present(tag)


def build_image(
    engines: Engine | Sequence[Engine],
    tag: str,
    packages: Sequence[str] = ("python3",),
    suite: str = "bookworm",
    mirror: str | None = None,
    progress: ProgressFn = print,
    workdir: str | os.PathLike[str] | None = None,
) -> str:
    """Debootstrap ``packages`` of ``suite`` into a folder, trim it, import it as ``tag``
    into each of ``engines`` (one root filesystem for all of them).

    python3 is always included. Needs root and debootstrap. Returns the new image's id (in the
    last engine).
    The build folder (created under ``workdir``, default the temp folder) is removed after.
    """
    _check_tag(tag)
    packages = _check_packages(packages)
    if not SUITE_RE.fullmatch(suite):
        raise ConfigError(f"invalid suite {suite!r}: expected a Debian codename like bookworm")
    mirror = mirror or default_mirror()
    if not re.match(r"(https?|file)://", mirror):
        raise ConfigError(
            f"invalid mirror {mirror!r}: expected an http://, https:// or file:// URL"
        )
    _check_host()
    engines = [engines] if isinstance(engines, Engine) else list(engines)
    root = Path(tempfile.mkdtemp(prefix="agentkernel-rootfs-", dir=workdir))
    try:
        progress(f"debootstrap {suite} from {mirror} with {', '.join(packages)} into {root}")
        _debootstrap(root, packages, suite, mirror, progress)
        trim(root)
        for engine in engines:
            progress(f"importing {root} into {engine.kind} as {tag}")
            image_id = import_tar(engine, stream_tar(root), tag)
            progress(f"built {tag} in {engine.kind} ({image_id[:19]})")
    finally:
        remove_build_folder(root)
    return image_id


def _check_tag(tag: str) -> tuple[str, str]:
    """Split a valid ``name[:tag]`` image reference; ConfigError otherwise."""
    repo, version = split_reference(tag)
    if "@" in tag or not NAME_RE.fullmatch(repo) or not TAG_RE.fullmatch(version or ""):
        raise ConfigError(
            f"invalid image tag {tag!r}: expected name[:tag] with a lowercase name, "
            "e.g. agentkernel-python:bookworm"
        )
    return repo, version or "latest"


def _check_packages(packages: Sequence[str]) -> list[str]:
    """The package list, validated, with python3 first when it was not asked for."""
    wanted = [p.strip() for p in packages if p.strip()]
    for name in wanted:
        if not PACKAGE_RE.fullmatch(name):
            raise ConfigError(
                f"invalid package name {name!r}: expected a Debian package name like python3-numpy"
            )
    return wanted if "python3" in wanted else ["python3", *wanted]


def _check_host() -> None:
    """Refuse early, in one line, when debootstrap cannot run here."""
    if shutil.which("debootstrap") is None:
        raise SandboxError(
            "debootstrap is not installed (not found on PATH): install it with "
            "`apt-get install debootstrap`"
        )
    if os.geteuid() != 0:
        raise SandboxError(
            "building an image needs root (debootstrap creates device nodes and chroots): "
            "run it as root, e.g. with sudo"
        )


def default_mirror() -> str:
    """The first Debian http(s) archive URL in the host's apt sources, else deb.debian.org."""
    files = [APT_SOURCES] if APT_SOURCES.is_file() else []
    if APT_SOURCES_DIR.is_dir():
        files += sorted(
            p for p in APT_SOURCES_DIR.iterdir() if p.suffix in (".list", ".sources")
        )
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        urls = _deb822_urls(text) if path.suffix == ".sources" else _one_line_urls(text)
        for url in urls:
            if _is_debian_archive(url):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def _one_line_urls(text: str) -> Iterator[str]:
    """URLs of ``deb`` lines in the one-line sources format."""
    for line in text.splitlines():
        line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0])
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "deb":
            yield fields[1]


def _deb822_urls(text: str) -> Iterator[str]:
    """URIs of enabled ``Types: deb`` stanzas in the deb822 sources format."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(("#", " ", "\t")):
                fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            yield from fields.get("uris", "").split()


def _is_debian_archive(url: str) -> bool:
    """An http(s) URL of the main Debian archive (not security, not a third-party repo)."""
    return bool(re.match(r"https?://", url)) and "debian" in url and "security" not in url


def _debootstrap(
    root: Path, packages: list[str], suite: str, mirror: str, progress: ProgressFn
) -> None:
    """Run debootstrap into ``root``, passing its output on; SandboxError with its log tail."""
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
           suite, str(root), mirror]
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                progress(line)
    if proc.returncode != 0:
        raise SandboxError(
            f"debootstrap failed (exit {proc.returncode}): {_failure_summary(root, tail)}"
        )


def _failure_summary(root: Path, output: deque[str], lines: int = 3) -> str:
    """debootstrap's ``E:`` lines, else the last lines of its log (or output), on one line."""
    errors = [line for line in output if line.startswith("E:")]
    if not errors:
        log = root / "debootstrap" / "debootstrap.log"
        try:
            errors = log.read_text(errors="replace").splitlines()
        except OSError:
            errors = list(output)
    last = [line.strip() for line in errors if line.strip()][-lines:] or ["no output"]
    return " | ".join(last)[-400:]


def trim(root: Path) -> None:
    """Drop docs, man pages, locales other than C, and apt's caches and lists."""
    for folder in TRIMMED:
        _empty(root / folder, keep=())
    _empty(root / LOCALES, keep=("C",))


def _empty(folder: Path, keep: tuple[str, ...]) -> None:
    """Remove what ``folder`` holds, except entries named in ``keep`` (``C`` keeps ``C.UTF-8``)."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for entry in folder.iterdir():
        if entry.name.split(".")[0] in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class _Sink:
    """A write-only file object that keeps what it is given until drained."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        chunks, self._chunks = self._chunks, []
        yield from chunks


def stream_tar(root: Path) -> Iterator[bytes]:
    """A tar of ``root``'s contents, made as it is read (memory: about one file at a time).

    Owners are stored as numbers only; the root's own names would not match the host's.
    """

    def numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        return info

    def add(path: Path) -> None:
        tar.add(path, arcname=str(path.relative_to(root)), recursive=False, filter=numeric)

    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|") as tar:
        for folder, dirs, files in os.walk(root):
            base = Path(folder)
            dirs.sort()
            if base != root:
                add(base)
            # os.walk lists links to folders among dirs but does not enter them.
            for name in sorted(files) + [d for d in dirs if (base / d).is_symlink()]:
                add(base / name)
                yield from sink.drain()
    yield from sink.drain()


def import_tar(
    engine: Engine, chunks: Iterable[bytes], tag: str, changes: Sequence[str] = IMAGE_CHANGES
) -> str:
    """Import a root filesystem tar (streamed as ``chunks``) and name it ``tag``; returns its id."""
    _check_tag(tag)
    return engine.import_image(chunks, tag, changes)


def remove_build_folder(root: Path) -> None:
    """Remove the build folder, unless something is still mounted inside it.

    debootstrap unmounts /proc, /sys and any bound /dev entries itself; if it was killed, a
    recursive delete would reach into those mounts, so they are unmounted first and the
    folder is left in place (named in the error) if any remain.
    """
    for mount in reversed(_mounts_under(root)):
        subprocess.run(["umount", "--lazy", mount], check=False, capture_output=True)
    remaining = _mounts_under(root)
    if remaining:
        raise SandboxError(
            f"left the build folder {root} in place: {remaining[0]} is still mounted inside it"
        )
    shutil.rmtree(root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, outermost first."""
    prefix = str(root.resolve())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]
