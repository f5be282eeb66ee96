"""The widgets test image: the test image plus ipywidgets and tqdm, for the JupyterLab test.

Built once by scripts/setup.sh (``python -m helpers.widgets_image``): the pure-Python wheels of
ipywidgets, widgetsnbextension, jupyterlab_widgets and tqdm come from PyPI (``pip download``),
their packages are unpacked into the image's site-packages of a created container through the
engine's archive API, and the container is committed as ``WIDGETS_IMAGE``. jupyterlab_widgets
is the host's version, so the sandbox's widgets speak the protocol of the page's widget manager.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from agentkernel.engine import Engine, connect

BASE_IMAGE = os.environ.get("AGENTKERNEL_IMAGE") or "agentkernel-test:latest"
WIDGETS_IMAGE = os.environ.get("AGENTKERNEL_WIDGETS_IMAGE") or "agentkernel-ipython-widgets:latest"
SITE = "/usr/lib/python3/dist-packages"  # Debian's python3 site folder in the test image


def requirements() -> list[str]:
    """The wheels to add; jupyterlab_widgets pinned to the host's (the page's extension)."""
    return ["ipywidgets>=8.1,<9", "widgetsnbextension>=4,<5", "tqdm>=4.60",
            f"jupyterlab_widgets=={metadata.version('jupyterlab_widgets')}"]


def download_wheels(folder: Path) -> list[Path]:
    """Pure-Python wheels of ``requirements()`` from PyPI into ``folder``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--dest", str(folder), *requirements()], check=True)
    wheels = sorted(folder.glob("*.whl"))
    assert all(w.name.endswith("-py3-none-any.whl") for w in wheels), wheels
    return wheels


def site_tar(wheels: list[Path]) -> bytes:
    """The wheels' packages and metadata as a tar for SITE (their ``.data`` trees, the
    frontend's files, are left out)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for entry in archive.infolist():
                    top = entry.filename.split("/", 1)[0]
                    if entry.is_dir() or top.endswith(".data"):
                        continue
                    data = archive.read(entry)
                    info = tarfile.TarInfo(entry.filename)
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(engine: Engine, tag: str = WIDGETS_IMAGE, base: str = BASE_IMAGE) -> str:
    """Build ``tag`` from ``base`` in ``engine``; returns the image id."""
    with tempfile.TemporaryDirectory(prefix="agentkernel-wheels-") as folder:
        archive = site_tar(download_wheels(Path(folder)))
    request = {"Image": base, "Entrypoint": ["/bin/true"], "Cmd": [],
               "Labels": {"agentkernel.test": "widgets-image"},
               # the host's ids: a Podman container in a user namespace commits what the
               # archive API wrote (and the folders above it) with the range's host ids, which
               # no sandbox's 65536-id namespace can then map
               "HostConfig": {"NetworkMode": "none", "UsernsMode": "host"}}
    container = engine.create_container(request, f"agentkernel-widgets-{secrets.token_hex(4)}")
    try:
        if not engine.put_archive(container, SITE, archive):
            raise RuntimeError(f"{base} has no {SITE}")
        return engine.commit_container(container, tag)
    finally:
        engine.remove_container(container)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["docker", "podman"])
    parser.add_argument("--tag", default=WIDGETS_IMAGE)
    parser.add_argument("--if-missing", action="store_true")
    args = parser.parse_args()
    for kind in args.engines:
        engine = connect(kind)
        if args.if_missing and engine.image_present(args.tag):
            continue
        print(f"[setup] building {args.tag} in {kind}", file=sys.stderr)
        build(engine, args.tag)


if __name__ == "__main__":
    main()
