"""The kernel's input history, answering Jupyter ``history_request`` (tail, range, search).

Kept in the kernel process for its lifetime: session 1 is this kernel, line N is execution
count N. ``search`` takes a glob pattern, as IPython's history does; ``range`` counts a negative
start or stop from the end, as IPython's does for its current session. A request whose fields
have the wrong types gets an error naming the field (:func:`request_problem`), where ipykernel
would raise in its handler and send no reply.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

SESSION = 1
ACCESS_TYPES = ("tail", "range", "search")
INTEGER_FIELDS = ("session", "start", "stop", "n")
FLAG_FIELDS = ("output", "raw", "unique")


@dataclass
class History:
    """Inputs by execution count, with the text/plain of their results."""

    inputs: list[tuple[int, str]] = field(default_factory=list)
    outputs: dict[int, str] = field(default_factory=dict)

    def add(self, count: int, code: str) -> None:
        self.inputs.append((count, code))

    def set_output(self, count: int, text: str) -> None:
        self.outputs[count] = text

    def _entry(self, count: int, code: str, output: bool) -> tuple[Any, ...]:
        value: Any = (code, self.outputs.get(count)) if output else code
        return (SESSION, count, value)

    def answer(self, hist_access_type: str, output: bool = False, session: int | None = None,
               start: int = 0, stop: int | None = None, n: int | None = None,
               pattern: str | None = None, unique: bool = False, **_: Any) -> list[tuple]:
        """The ``history`` list of a history_reply."""
        if hist_access_type == "tail":
            chosen = list(self.inputs) if n is None else self.inputs[-n:] if n else []
        elif hist_access_type == "range":
            if session not in (None, SESSION, 0):
                return []
            start, stop = self._bounds(start, stop)
            chosen = [(c, code) for c, code in self.inputs if start <= c < stop]
        elif hist_access_type == "search":
            chosen = [(c, code) for c, code in self.inputs
                      if fnmatch.fnmatchcase(code, pattern or "*")]
            if unique:
                seen: set[str] = set()
                chosen = [e for e in reversed(chosen) if not (e[1] in seen or seen.add(e[1]))]
                chosen.reverse()
            if n is not None:
                chosen = chosen[-n:] if n else []
        else:
            return []
        return [self._entry(count, code, output) for count, code in chosen]

    def _bounds(self, start: int | None, stop: int | None) -> tuple[int, int]:
        """IPython's reading of a range in its current session: negative counts from the end,
        a missing or zero stop (or one past the end) is the end."""
        end = (self.inputs[-1][0] + 1) if self.inputs else 1
        start = start or 0
        if start < 0:
            start += end
        if not stop or stop > end:
            stop = end
        elif stop < 0:
            stop += end
        return start, stop


def request_problem(content: Any) -> str | None:
    """What is wrong with a history_request's content (one line naming the field and what it
    accepts), or None."""
    if not isinstance(content, dict):
        return "the history request's content must be an object"
    kind = content.get("hist_access_type")
    if not isinstance(kind, str):
        return (f"invalid hist_access_type {_shown(kind)}: expected one of "
                f"{', '.join(map(repr, ACCESS_TYPES))}")
    for name in INTEGER_FIELDS:
        value = content.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"invalid {name} {_shown(value)}: expected an integer or null"
    if isinstance(content.get("n"), int) and content["n"] < 0:
        return f"invalid n {_shown(content['n'])}: expected a count, 0 or more, or null"
    for name in FLAG_FIELDS:
        if content.get(name) is not None and not isinstance(content[name], bool):
            return f"invalid {name} {_shown(content[name])}: expected true or false"
    if content.get("pattern") is not None and not isinstance(content["pattern"], str):
        return f"invalid pattern {_shown(content['pattern'])}: expected a glob pattern string"
    return None


def request_fields(content: dict[str, Any]) -> dict[str, Any]:
    """The fields of a valid history_request that ``do_history`` takes (unknown ones left
    out; ``output`` false and ``raw`` true when missing)."""
    fields = {name: content.get(name) for name in (*INTEGER_FIELDS, "pattern")}
    return {"hist_access_type": content["hist_access_type"],
            "output": bool(content.get("output")), "raw": content.get("raw") is not False,
            "unique": bool(content.get("unique")), **fields}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
