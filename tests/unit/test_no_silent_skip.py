"""In CI (CI=true) nothing the machine should have is skipped: every skip of the suite goes
through ``helpers.required.unavailable`` (a failure in CI), a ``skipif`` holds only outside CI,
and the one other skip is a parametrisation that does not apply (an engine's own feature)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"pytest\.skip\(|importorskip\(|mark\.skip\(|pytest\.xfail\(|mark\.xfail")
SKIPIF = re.compile(r"mark\.skipif\((.*?)reason=", re.S)
# (file, the reason's start): skips that are not about the machine
NOT_THE_MACHINES = {("engine/test_docker_userns.py", "userns-remap is Docker's")}


def _sources() -> dict[str, str]:
    return {str(path.relative_to(TESTS)): path.read_text() for path in TESTS.rglob("*.py")
            if path.name != Path(__file__).name}


def test_a_skip_fails_in_ci() -> None:
    found = set()
    for name, text in _sources().items():
        for match in SKIP.finditer(text):
            if name == "helpers/required.py":
                continue
            reason = text[match.end():].split("\n", 1)[0].strip("\"' ")
            found.add((name, next((allowed for file, allowed in NOT_THE_MACHINES
                                   if file == name and reason.startswith(allowed)), reason)))
    assert found == NOT_THE_MACHINES, "a skip outside helpers.required.unavailable"


def test_a_skipif_holds_only_outside_ci() -> None:
    conditions = [(name, match.group(1)) for name, text in _sources().items()
                  for match in SKIPIF.finditer(text)]
    assert conditions, "the pattern finds the suite's skipif marks"
    for name, condition in conditions:
        assert 'os.environ.get("CI") != "true"' in condition, f"{name}: {condition}"
