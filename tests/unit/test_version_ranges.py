"""The oldest releases scripts/test runs the kernel's tests on (tests/oldest-constraints.txt) are
the floors of pyproject.toml's ranges, one for every dependency, and every range has a ceiling
where the libraries we build on are concerned (what is tested, not what might come)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "tests" / "oldest-constraints.txt"
# whose private names or behaviour the kernel depends on: a new major release is tried first
CAPPED = {"docker", "ipykernel", "jupyter-client", "pyzmq", "traitlets", "ipython"}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonical(r.name): r for r in map(Requirement, project["dependencies"])}


def pins() -> dict[str, Version]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonical(name)] = Version(version)
    return found


def floor(requirement: Requirement) -> Version | None:
    lows = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return max(lows) if lows else None


def test_every_dependency_is_pinned_at_its_floor() -> None:
    deps, pinned = dependencies(), pins()
    assert set(pinned) == set(deps), (sorted(set(deps) ^ set(pinned)))
    for name, requirement in deps.items():
        assert pinned[name] == floor(requirement), (
            f"{name}: pyproject.toml says {requirement.specifier}, "
            f"tests/oldest-constraints.txt pins {pinned[name]}")


def test_the_libraries_we_build_on_have_a_ceiling() -> None:
    deps = dependencies()
    for name in CAPPED:
        assert any(s.operator == "<" for s in deps[name].specifier), (
            f"{name} {deps[name].specifier}: no ceiling")
