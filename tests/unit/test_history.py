"""The kernel's history answers (pure logic)."""

from __future__ import annotations

import pytest

from agentkernel_kernel.history import SESSION, History, request_fields, request_problem


def filled() -> History:
    history = History()
    for count, code in enumerate(["a = 1", "1 + 2", "print(a)", "1 + 2", "b = a"], start=1):
        history.add(count, code)
    history.set_output(2, "3")
    return history


def test_tail_and_outputs() -> None:
    history = filled()
    assert history.answer("tail", n=2) == [(SESSION, 4, "1 + 2"), (SESSION, 5, "b = a")]
    assert history.answer("tail", n=4, output=True)[0] == (SESSION, 2, ("1 + 2", "3"))
    assert len(history.answer("tail")) == 5


def test_range() -> None:
    history = filled()
    assert history.answer("range", session=SESSION, start=2, stop=4) == [
        (SESSION, 2, "1 + 2"), (SESSION, 3, "print(a)")]
    assert history.answer("range", session=99, start=1) == []


def test_search() -> None:
    history = filled()
    assert [c for _, c, _ in history.answer("search", pattern="1*")] == [2, 4]
    assert [c for _, c, _ in history.answer("search", pattern="1*", unique=True)] == [4]
    assert [c for _, c, _ in history.answer("search", pattern="*a*", n=1)] == [5]
    assert history.answer("frobnicate") == []


def test_range_reads_bounds_as_ipython_does() -> None:
    """As the local python3 kernel answers for its current session (measured with the same
    three cells there): negative start or stop counts from the end, 0 or past-the-end stop is
    the end, a start past the end or another session gives nothing."""
    history = History()
    for count, code in enumerate(["a = 1", "1 + 2", "print(a)"], start=1):
        history.add(count, code)
    assert [c for _, c, _ in history.answer("range", session=0, start=-2)] == [2, 3]
    assert [c for _, c, _ in history.answer("range", session=0, start=1, stop=-1)] == [1, 2]
    assert [c for _, c, _ in history.answer("range", session=0, start=1, stop=0)] == [1, 2, 3]
    assert history.answer("range", session=0, start=10**30) == []
    assert history.answer("range", session=-1, start=1) == []
    assert history.answer("tail", n=0) == [] and len(history.answer("tail", n=10**30)) == 3


@pytest.mark.parametrize("content, field", [
    ({"hist_access_type": "range", "session": 0, "start": "x"}, "start"),
    ({"hist_access_type": "range", "session": 0, "start": 1, "stop": "y"}, "stop"),
    ({"hist_access_type": "range", "session": "s", "start": 1}, "session"),
    ({"hist_access_type": "range", "session": 0, "start": 1.5}, "start"),
    ({"hist_access_type": "range", "session": 0, "start": True}, "start"),
    ({"hist_access_type": "tail", "n": "x"}, "n"),
    ({"hist_access_type": "tail", "n": -1}, "n"),
    ({"hist_access_type": "search", "pattern": 5}, "pattern"),
    ({"hist_access_type": "search", "pattern": "*", "unique": "yes"}, "unique"),
    ({"hist_access_type": 7}, "hist_access_type"),
    ({"output": False, "raw": True}, "hist_access_type"),
])
def test_malformed_requests_are_named(content: dict, field: str) -> None:
    problem = request_problem({"output": False, "raw": True, **content})
    assert problem is not None and problem.startswith(f"invalid {field} ")
    assert "expected" in problem and "\n" not in problem


def test_well_formed_requests_pass_with_defaults() -> None:
    content = {"hist_access_type": "tail", "n": 3, "bogus": 1}
    assert request_problem(content) is None
    assert request_fields(content) == {
        "hist_access_type": "tail", "output": False, "raw": True, "unique": False,
        "session": None, "start": None, "stop": None, "n": 3, "pattern": None}
    assert request_problem({"hist_access_type": "frobnicate"}) is None  # ipykernel: ok, []
    assert request_problem([1]) is not None
