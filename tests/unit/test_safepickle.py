"""The restricted unpickler behind ``%sandbox pull``: what it rebuilds and what it refuses."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import os
import pickle
import uuid
import zoneinfo

import pytest

from agentkernel import safepickle


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


