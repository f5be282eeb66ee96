"""The map is true: imports follow docs/ARCHITECTURE.md's table, third-party libraries stay on
their side of the seams, and the in-container runner needs nothing but the standard library and
what agentkernel's IPython bundle brings (IPython and its requirements, comm)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
# Third-party top-level packages, and the parts allowed to import them.
SEAMS = {
    "docker": {"engine"},
    "requests": {"engine"},
    "ipykernel": {"agentkernel_kernel"},
    "jupyter_client": {"agentkernel_kernel"},
    "zmq": {"agentkernel_kernel"},
    "IPython": {"extension", "agentkernel_kernel", "runner"},
    "nh3": {"sanitize"},
    "markdown_it": {"sanitize"},
}
# What the runner may import inside the sandbox besides the standard library: the bundle's.
RUNNER_THIRD_PARTY = {"IPython", "traitlets", "comm"}
# Runner modules that run before IPython is importable (or on the host): standard library only.
RUNNER_STDLIB_ONLY = {"boot", "protocol", "pump", "ipython_path", "__init__"}
# Host modules run from their sources as ``python -I -S -c`` (the reaper: the transport's source,
# then its own): the standard library, and of agentkernel only the modules run with them.
STANDALONE = {
    "agentkernel.engine.transport": set(),
    "agentkernel.reaper": {"agentkernel.engine", "agentkernel.engine.transport"},
}


def allowed_imports() -> dict[str, set[str]]:
    """The "may import" table of ARCHITECTURE.md: part -> the parts it may import."""
    text = ARCHITECTURE.read_text()
    block = re.search(r"```\npart +may import\n(.*?)```", text, re.S)
    assert block, "ARCHITECTURE.md has no 'part / may import' table"
    table = {}
    for line in block.group(1).strip().splitlines():
        part, _, rest = line.strip().partition(" ")
        table[part] = set() if rest.strip() == "-" else {p.strip() for p in rest.split(",")}
    return table


def part_of(module: str) -> str:
    """``agentkernel.sandbox.files`` -> ``sandbox``; ``agentkernel_kernel.x`` -> its package."""
    parts = module.split(".")
    if parts[0] == "agentkernel_kernel":
        return "agentkernel_kernel"
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    found = {}
    for package in ("agentkernel", "agentkernel_kernel"):
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, at any depth of its code (absolute names)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found |= {f"{target}.{alias.name}" for alias in node.names} | {target}
            else:
                found.add(node.module or "")
    return found


def test_the_table_names_every_part():
    table = allowed_imports()
    assert {part_of(name) for name in modules()} == set(table)


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_follow_the_table(name):
    table, known = allowed_imports(), modules()
    part = part_of(name)
    for imported in imports_of(name, known[name]):
        top = imported.split(".")[0]
        if top in ("agentkernel", "agentkernel_kernel"):
            # "from . import paths" names a module; "from .x import y" names x
            target = imported if imported in known else imported.rpartition(".")[0]
            other = part_of(target or imported)
            if other == "__init__" and part != "__init__":
                continue  # the package itself (its version, its lazy exports): light for all
            assert other == part or other in table[part], (
                f"{name} imports {imported}: {part} may import only {sorted(table[part])}")
        elif top in SEAMS:
            assert part in SEAMS[top], f"{name} imports {top}, kept to {sorted(SEAMS[top])}"


def test_the_runner_needs_only_the_standard_library_and_the_bundle():
    for name, path in modules().items():
        if part_of(name) != "runner":
            continue
        allowed = set() if path.stem in RUNNER_STDLIB_ONLY else RUNNER_THIRD_PARTY
        for imported in imports_of(name, path):
            top = imported.split(".")[0]
            assert (top in sys.stdlib_module_names or top in allowed
                    or imported.startswith(("agentkernel.runner", "_agentkernel_runner"))), (
                f"{name} imports {imported}")


@pytest.mark.parametrize("name", sorted(STANDALONE))
def test_what_runs_from_its_source_needs_only_the_standard_library(name):
    for imported in imports_of(name, modules()[name]):
        assert (imported.split(".")[0] in sys.stdlib_module_names
                or imported in STANDALONE[name]), f"{name} imports {imported}"


def test_the_bundle_holds_what_the_runner_imports():
    from agentkernel.sandbox.bundle import host_bundle

    held = {name.lower() for name, _ in host_bundle().distributions}
    assert {"ipython", "traitlets", "comm", "matplotlib_inline"} <= {
        n.replace("-", "_") for n in held}
