"""The private names of the libraries we build on are used in their compat modules only.

ipykernel's in agentkernel_kernel/ipykernel_compat.py, IPython's (in the runner) in
agentkernel/runner/ipython_compat.py, docker-py's in agentkernel/engine/dockerpy.py: each checks
them when it loads (tests/unit/test_*_compat.py, test_dockerpy.py). A use is an attribute of
that name, a method of that name (an override) or a string equal to it (``getattr(x, "_y")``,
``sys.modules["paramiko"]``), found in the code's syntax tree: comments and docstrings may name
them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# library -> (its compat module, the code that may reach the library, its private names)
LIBRARIES = {
    "ipykernel": ("agentkernel_kernel/ipykernel_compat.py", ("agentkernel_kernel/",), {
        "_try_bind_socket", "_bind_socket", "_at_shutdown", "_allow_stdin",
        "_supports_kernel_subshells", "_input_request", "_parent_ident", "_shell_parent_ident",
        "_publish_status", "_send_abort_reply", "_aborting", "_recorded_ports",
    }),
    "IPython": ("agentkernel/runner/ipython_compat.py", ("agentkernel/", "agentkernel_kernel/"), {
        "_showtraceback", "_tee", "_validate_data", "_find_edit_target", "_get_exc_info",
        "_last_input_line",
    }),
    "docker-py": ("agentkernel/engine/dockerpy.py", ("agentkernel/",), {
        "SSHHTTPAdapter", "paramiko", "_get_raw_response_socket", "_custom_adapter",
        "_raise_for_status", "_post_json", "_stream_helper", "_read_from_socket", "_sock",
    }),
}
# Names our own classes also give their own attributes (reached through ``self`` only).
OWN_ON_SELF = {"_sock"}


def uses(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every use of ``names`` in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            on_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            if not (on_self and node.attr in OWN_ON_SELF):
                found.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
            found.append((node.lineno, node.name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                node.value in names):
            found.append((node.lineno, node.value))
    return found


def sources() -> list[Path]:
    return sorted(path for package in ("agentkernel", "agentkernel_kernel")
                  for path in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_private_names_stay_in_the_compat_module(library: str) -> None:
    compat, reach, names = LIBRARIES[library]
    misplaced = []
    for path in sources():
        relative = path.relative_to(REPO).as_posix()
        if relative == compat or not relative.startswith(reach):
            continue
        misplaced += [f"{relative}:{line}: {name}"
                      for line, name in uses(ast.parse(path.read_text()), names)]
    assert not misplaced, f"{library}'s private names outside {compat}: {misplaced}"


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_the_compat_module_names_them(library: str) -> None:
    """The check has something to find: each compat module uses some of its list."""
    compat, _reach, names = LIBRARIES[library]
    assert uses(ast.parse((REPO / compat).read_text()), names)


def test_a_use_outside_is_found() -> None:
    code = ("class K(Kernel):\n"
            "    def _at_shutdown(self):\n"
            "        self._allow_stdin = getattr(self, '_supports_kernel_subshells')\n"
            "        return self._sock, sock._sock\n")
    names = LIBRARIES["ipykernel"][2] | LIBRARIES["docker-py"][2]
    assert sorted(uses(ast.parse(code), names)) == [
        (2, "_at_shutdown"), (3, "_allow_stdin"), (3, "_supports_kernel_subshells"),
        (4, "_sock")]
