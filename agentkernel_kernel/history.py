"""The kernel's input history, answering Jupyter ``history_request`` (tail, range, search).

Kept in the kernel process for its lifetime: session 1 is this kernel, line N is execution
count N. ``search`` takes a glob pattern, as IPython's history does.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

SESSION = 1


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
            chosen = self.inputs[-n:] if n else list(self.inputs)
        elif hist_access_type == "range":
            if session not in (None, SESSION, 0):
                return []
            chosen = [(c, code) for c, code in self.inputs
                      if c >= start and (stop is None or c < stop)]
        elif hist_access_type == "search":
            chosen = [(c, code) for c, code in self.inputs
                      if fnmatch.fnmatchcase(code, pattern or "*")]
            if unique:
                seen: set[str] = set()
                chosen = [e for e in reversed(chosen) if not (e[1] in seen or seen.add(e[1]))]
                chosen.reverse()
            if n:
                chosen = chosen[-n:]
        else:
            return []
        return [self._entry(count, code, output) for count, code in chosen]
