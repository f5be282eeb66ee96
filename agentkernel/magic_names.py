"""The names of our magics, and whether a cell can call one at all (without loading their
parsers, ``commands.py``: its command classes cost 15 ms to define)."""

from __future__ import annotations

OUR_MAGICS = frozenset({"sandbox", "sandbox_file", "sandbox_exec"})
"""Magic names ``commands.py`` owns; any other ``%name`` is left to whoever runs the cell."""
STEM = "sandbox"  # what each of their names holds


def may_call_ours(code: str) -> bool:
    """False when no line of ``code`` can call one of our magics (none of their names is in
    it): the cell goes to the runner as it is; True when ``commands.parse_code`` decides."""
    return STEM in code
