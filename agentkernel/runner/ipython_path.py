"""Which IPython the runner uses: the image's own when it has a recent one, else agentkernel's.

agentkernel's IPython (the "bundle": IPython and its pure-Python requirements, with
matplotlib-inline and comm) is mounted read-only in the sandbox; ``prepare`` decides from
package metadata alone, before anything is imported, and puts the bundle on ``sys.path``:
appended when the image's IPython wins (the bundle then only fills gaps such as comm), prepended
when the bundle's is used (its requirements then win over older copies in the image). When the
volume also holds IPython 8 (the image's matplotlib is older than 3.9: the host put it there),
its site folder goes just before the bundle's, so IPython 8 and matplotlib-inline 0.1 win.
Standard library only, Python 3.8 syntax, so that an old interpreter still gets a clear
one-line answer.
"""

from __future__ import annotations

import json
import os
import re
import sys

OLDEST_PYTHON = (3, 10)  # what agentkernel supports in a sandbox at all
OLDEST_IMAGE_IPYTHON = (8, 0)  # the image's own IPython is used from this version on
MANIFEST = "agentkernel-bundle.json"  # written by the host when it fills the bundle volume
COMPLETE = ".complete"  # written last, once the volume holds the whole bundle
SITE = "lib/python3/site-packages"  # the bundle's packages, unless its manifest says otherwise


class Unsupported(Exception):
    """The sandbox cannot run IPython; the message is one line naming what is needed."""


def _version_tuple(text: str) -> tuple:
    """(major, minor) of a version string such as "9.18.1" or "8.0.0rc1"; () if unreadable."""
    found = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(found.group(1)), int(found.group(2))) if found else ()


def image_ipython() -> str | None:
    """The version of the IPython installed in the image (None: none, or no version known),
    from the name of its ``.dist-info`` / ``.egg-info`` folder: nothing is imported, and this
    is faster than importlib.metadata, which a runner start would pay for."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("IPython")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    site = os.path.dirname(os.path.dirname(spec.origin))
    try:
        names = os.listdir(site)
    except OSError:
        return None
    for name in names:
        found = re.fullmatch(r"ipython-([^-]+?)(?:-py[\d.]+)?\.(?:dist|egg)-info", name, re.I)
        if found:
            return found.group(1)
    return None


def _python() -> str:
    return "{}.{}.{}".format(*sys.version_info[:3])


def _read_manifest(bundle: str) -> dict:
    if not os.path.exists(os.path.join(bundle, COMPLETE)):
        raise Unsupported(
            f"the IPython volume mounted at {bundle} is incomplete (its fill was interrupted): "
            "remove it with `agentkernel gc --bundles`, the next sandbox fills a new one"
        )
    with open(os.path.join(bundle, MANIFEST), encoding="utf-8") as handle:
        return json.load(handle)


def _sites(bundle: str, manifest: dict) -> list[str]:
    """The bundle's site folders in their ``sys.path`` order: IPython 8's first when the volume
    holds it, then the bundle's own."""
    sites = [os.path.join(bundle, str(manifest.get("site") or SITE))]
    older = manifest.get("ipython8")
    if isinstance(older, dict) and older.get("site"):
        sites.insert(0, os.path.join(bundle, str(older["site"])))
    return sites


def prepare(bundle: str | None) -> tuple[str, str]:
    """Make IPython importable; return (where it comes from: "image" or "agentkernel", version).

    ``bundle`` is where the host mounted agentkernel's IPython (None or a missing folder: not
    mounted). Raises Unsupported when no usable IPython can be had.
    """
    if sys.version_info[:2] < OLDEST_PYTHON:
        raise Unsupported(
            f"the image's Python {_python()} is too old: agentkernel needs Python "
            f"{'.'.join(map(str, OLDEST_PYTHON))} or newer in the sandbox"
        )
    mounted = bool(bundle) and os.path.isdir(bundle)
    own = image_ipython()
    if own is not None and _version_tuple(own) >= OLDEST_IMAGE_IPYTHON:
        if mounted:
            try:
                sys.path.extend(_sites(bundle, _read_manifest(bundle)))
            except (Unsupported, OSError, ValueError):
                sys.path.append(os.path.join(bundle, SITE))
        return "image", own
    if not mounted:
        raise Unsupported(
            "the image has no IPython (8.0 or newer) and agentkernel's IPython is not mounted: "
            "install ipython in the image, or start the sandbox through agentkernel"
        )
    manifest = _read_manifest(bundle)
    needed = tuple(manifest.get("min_python") or ())
    if sys.version_info[:2] < needed:
        raise Unsupported(
            f"the image's Python {_python()} is older than {'.'.join(map(str, needed))}, which "
            f"IPython {manifest.get('ipython')} (agentkernel's, for images without IPython) "
            f"needs: use an image with Python {'.'.join(map(str, needed))} or newer, or one "
            "with IPython 8 or newer installed"
        )
    position = 1 if sys.path and sys.path[0] == "" else 0  # the working folder stays first
    sys.path[position:position] = _sites(bundle, manifest)
    older = manifest.get("ipython8")
    version = older.get("ipython") if isinstance(older, dict) else manifest.get("ipython")
    return "agentkernel", str(version)
