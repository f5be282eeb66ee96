"""The kernel's history answers (pure logic)."""

from __future__ import annotations

from agentkernel_kernel.history import SESSION, History


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
