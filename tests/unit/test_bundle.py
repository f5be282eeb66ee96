"""agentkernel's IPython bundle, as this host makes it: what it holds, and its cache."""

from __future__ import annotations

import io
import json
import tarfile
from importlib import metadata

import pytest

from agentkernel.errors import SandboxError
from agentkernel.sandbox import bundle as bundle_module
from agentkernel.sandbox import ipython8
from agentkernel.sandbox.bundle import (
    COMPILED_SUFFIXES,
    IPYTHON8_SITE,
    MANIFEST,
    SITE,
    host_bundle,
    min_python,
)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder, and host_bundle() forgotten by this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    host_bundle.cache_clear()
    yield tmp_path / "agentkernel"
    host_bundle.cache_clear()


def test_the_bundle_is_ipython_and_its_pure_python_requirements():
    bundle = host_bundle()
    names = {name.lower().replace("_", "-") for name, _ in bundle.distributions}
    assert {"ipython", "matplotlib-inline", "comm", "traitlets", "jedi", "pygments"} <= names
    assert "psutil" not in names  # compiled, and only a fallback of IPython's
    assert bundle.ipython == metadata.version("ipython")
    assert bundle.min_python == min_python(metadata.metadata("ipython")["Requires-Python"])
    files = [relative for relative, _ in bundle.files()]
    assert "IPython/__init__.py" in files
    assert not [f for f in files if f.endswith(COMPILED_SUFFIXES) or f.endswith(".pyc")]


def test_the_tar_holds_the_site_folder_and_the_manifest():
    bundle = host_bundle()
    with tarfile.open(fileobj=io.BytesIO(bundle.tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        manifest = json.load(tar.extractfile(members[MANIFEST]))
    assert f"{SITE}/IPython/core/interactiveshell.py" in members
    assert all(m.uid == 0 and m.mode & 0o004 for m in members.values())  # world-readable
    assert manifest["digest"] == bundle.digest and manifest["site"] == SITE
    assert manifest["min_python"] == list(bundle.min_python)


@pytest.mark.parametrize(("requires", "expected"), [
    (">=3.11", (3, 11)), (">=3.10.2,<4", (3, 10, 2)), ("~=3.9", (3, 9)), ("", (3, 0)),
])
def test_min_python(requires, expected):
    assert min_python(requires) == expected


def test_the_digest_is_cached_until_a_distribution_changes(fresh_cache):
    computed = host_bundle()
    cache_files = list(fresh_cache.glob("ipython-bundle-*.json"))
    assert len(cache_files) == 1 and (fresh_cache.stat().st_mode & 0o777) == 0o700
    host_bundle.cache_clear()
    cached = bundle_module._from_cache()
    assert cached is not None and cached.digest == computed.digest
    assert cached.distributions == computed.distributions
    entry = json.loads(cache_files[0].read_text())
    entry["records"][0][1] += 1  # as if that distribution were reinstalled
    cache_files[0].write_text(json.dumps(entry))
    assert bundle_module._from_cache() is None
    assert host_bundle().digest == computed.digest  # worked out again, and cached again
    assert bundle_module._from_cache() is not None


def _copy_with_record(tmp_path, name: str, edit) -> metadata.Distribution:
    """A copy of the host's ``ipython`` .dist-info whose RECORD lines went through ``edit``."""
    source = metadata.distribution("ipython")
    folder = tmp_path / name / f"ipython-{source.version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(source.read_text("METADATA"))
    lines = source.read_text("RECORD").splitlines()
    (folder / "RECORD").write_text("\n".join(edit(line) for line in lines) + "\n")
    return metadata.PathDistribution(folder)


def test_the_digest_does_not_depend_on_where_the_environment_is(tmp_path):
    """pip records console scripts (``../../../bin/ipython``) with the hash of a file whose
    first line names the environment's python: two venvs with the same IPython must still
    share the bundle's volume, while a changed package file must change the digest."""
    host = _copy_with_record(tmp_path, "host", lambda line: line)
    scripts = [line for line in host.read_text("RECORD").splitlines() if line.startswith("../")]
    assert scripts, "pip records IPython's console scripts"

    def other_venv(line: str) -> str:
        return line.split(",")[0] + ",sha256=elsewhere,99" if line.startswith("../") else line

    def changed_file(line: str) -> str:
        return line + "0" if line.startswith("IPython/__init__.py,") else line

    moved = _copy_with_record(tmp_path, "moved", other_venv)
    changed = _copy_with_record(tmp_path, "changed", changed_file)
    assert bundle_module._fingerprint(moved) == bundle_module._fingerprint(host)
    assert bundle_module._fingerprint(changed) != bundle_module._fingerprint(host)


# --- IPython 8, for images whose matplotlib is older than 3.9 ------------------------------------
@pytest.mark.parametrize(("version", "needed"), [
    ("3.6.3", True),  # Debian bookworm
    ("3.5.1", True),  # Ubuntu 22.04
    ("3.8.4", True),  # the last matplotlib whose pyplot imports backend2gui
    ("3.9.0", False), ("3.10.1+dfsg1", False), ("4.0", False),  # 3.10.1+dfsg1: Debian trixie
    (None, False), ("", False), ("unknown", False),
])
def test_ipython8_goes_to_images_whose_matplotlib_is_older_than_3_9(version, needed):
    assert ipython8.needed(version) is needed


def test_the_tar_with_ipython8_has_its_site_folder_and_says_so():
    bundle = host_bundle()
    with tarfile.open(fileobj=io.BytesIO(bundle.tar(ipython8.ensure_installed()))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        manifest = json.load(tar.extractfile(members[MANIFEST]))
    assert manifest["ipython8"] == {"site": IPYTHON8_SITE, "ipython": ipython8.IPYTHON}
    for module in ("IPython/core/pylabtools.py", "matplotlib_inline/backend_inline.py",
                   "decorator/__init__.py"):
        assert f"{IPYTHON8_SITE}/{module}" in members
    assert f"{SITE}/IPython/core/pylabtools.py" in members  # the host's own IPython stays
    assert not [name for name in members if name.startswith(f"{IPYTHON8_SITE}/traitlets")]


def test_ipython8_whose_requirement_the_bundle_lacks_is_refused(monkeypatch):
    """decorator is one of the pins because IPython 9 no longer requires it: without it the
    bundle could not run IPython 8, and the fill says so instead of filling a broken volume."""
    folder = ipython8.ensure_installed()
    pins = [pin for pin in ipython8.PINNED if pin[0] != "decorator"]
    monkeypatch.setattr(ipython8, "PINNED", tuple(pins))
    with pytest.raises(SandboxError, match=r"^ipython 8\.\S+ .* requires decorator, which"):
        host_bundle().ipython8_files(folder)


def test_the_pins_name_the_bundle():
    """Changing what older images get changes the digest, so their volumes are filled again."""
    assert json.dumps(ipython8.PINNED) in bundle_module._rules()
