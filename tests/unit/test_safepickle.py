"""The restricted unpickler behind ``%sandbox pull``: what it rebuilds and what it refuses."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import os
import pickle
import subprocess
import sys
import uuid
import zoneinfo

import pytest

from agentkernel import safepickle
from agentkernel.errors import TooLarge


class HostOnly:
    """A class the restricted unpickler must refuse."""


class Evil:
    """Unpickling it would run a command on the host."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo owned",))


class EvilAttribute:
    """Unpickling it would reach a method through getattr."""

    def __reduce__(self) -> tuple:
        return (getattr, (collections.OrderedDict, "fromkeys"))


PLAIN_VALUES = [
    {"a": [1, 2.5, "x", b"y", None, True], (1, 2): frozenset({3}), "s": {4, 5}},
    [complex(1, 2), range(3), bytearray(b"z"), slice(1, 5), Ellipsis, 10**40],
    collections.OrderedDict(a=1),
    collections.defaultdict(list, a=[1]),
    collections.deque([1, 2], maxlen=3),
    collections.Counter("abca"),
    datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC),
    datetime.datetime(2024, 5, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    [datetime.date(2024, 1, 1), datetime.time(3, 4), datetime.timedelta(days=2)],
    [decimal.Decimal("1.10"), fractions.Fraction(1, 3), uuid.UUID(int=7)],
]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=lambda v: type(v).__name__)
def test_safepickle_rebuilds_plain_data(value: object) -> None:
    for protocol in (4, pickle.HIGHEST_PROTOCOL):  # the runner pickles with 4 or 5
        assert safepickle.loads(pickle.dumps(value, protocol=protocol)) == value


@pytest.mark.parametrize(
    "value, named",
    [
        (HostOnly(), "test_safepickle.HostOnly"),
        (Evil(), "posix.system"),
        (EvilAttribute(), "attribute 'fromkeys' of collections.OrderedDict"),
        ({"nested": [HostOnly()]}, "test_safepickle.HostOnly"),
    ],
)
def test_safepickle_refuses_everything_else(value: object, named: str) -> None:
    with pytest.raises(safepickle.UnpicklingRefused, match="is not allowed") as caught:
        safepickle.loads(pickle.dumps(value))
    assert named in str(caught.value) and "\n" not in str(caught.value)




# -- what rebuilding costs the host (loads_bounded) ---------------------------------------------
class Reduced:
    """A pickle calling ``func(*args)``, as a hostile sandbox would write it."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)


HOST_SIDE = """
import pickle, resource, sys
from agentkernel import safepickle
data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    safepickle.loads_bounded(data, int(sys.argv[1]))
    outcome = "loaded"
except Exception as err:
    outcome = f"{type(err).__name__}: {err}"
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, outcome)
"""


def pull_in_a_fresh_process(value: object, max_bytes: int) -> tuple[int, str]:
    """(MB the peak RSS of a process grew by while it pulled ``value``, what loads_bounded
    did)."""
    done = subprocess.run([sys.executable, "-c", HOST_SIDE, str(max_bytes)], check=True,
                          input=pickle.dumps(value, protocol=4), capture_output=True)
    peak, _, outcome = done.stdout.decode().strip().partition(" ")
    return int(peak), outcome


def test_a_small_pickle_of_a_huge_list_never_reaches_the_hosts_process() -> None:
    """47 bytes that rebuild ``list(range(8_000_000))``: 300 MB rebuilt, 40 MB re-pickled."""
    peak, outcome = pull_in_a_fresh_process(Reduced(list, range(8_000_000)), 16 << 20)
    assert outcome.startswith("TooLarge") and "max_pull_mb" in outcome, outcome
    assert peak < 64, f"the pulling process grew by {peak} MB"


def test_a_value_that_takes_far_more_memory_than_its_pickle_is_refused() -> None:
    """A list of empty lists: two pickle bytes each, about 64 bytes each in memory."""
    with pytest.raises(TooLarge, match="of memory, over 8 times the 4.0 MB limit"):
        safepickle.loads_bounded(pickle.dumps([[] for _ in range(1_500_000)]), 4 << 20)
    assert safepickle.loads_bounded(pickle.dumps([[] for _ in range(1000)]), 4 << 20) == [
        [] for _ in range(1000)]


@pytest.mark.parametrize("args", [("1e100000000",), ("1.5e10",), (10**5000, 3), (3, 10**5000),
                                  (decimal.Decimal(1),)])
def test_a_fraction_is_rebuilt_only_from_ints_of_bounded_size(args: tuple) -> None:
    with pytest.raises(safepickle.UnpicklingRefused, match="Fraction") as caught:
        safepickle.loads_bounded(pickle.dumps(Reduced(fractions.Fraction, *args)), 16 << 20)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("args, value", [(("-7/3",), fractions.Fraction(-7, 3)),
                                         (("12",), fractions.Fraction(12)),
                                         ((10**4000, 3), fractions.Fraction(10**4000, 3))])
def test_fractions_as_python_pickles_them_are_rebuilt(args: tuple, value: object) -> None:
    """``"n/d"`` text is how Python 3.10 pickles a Fraction; two ints from 3.11 on."""
    pulled = Reduced(fractions.Fraction, *args)
    assert safepickle.loads_bounded(pickle.dumps(pulled), 16 << 20) == value


def test_ints_parse_from_text_within_pythons_limit_whatever_the_hosts_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONINTMAXSTRDIGITS", "0")  # the host's own: no limit
    with pytest.raises(pickle.UnpicklingError, match="Exceeds the limit"):
        safepickle.loads_bounded(pickle.dumps(Reduced(int, "9" * 100_000)), 16 << 20)
