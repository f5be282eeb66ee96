"""Unpickle values that come back from a sandbox without letting them run code on the host.

A pickle names the callables that rebuild it, and ``pickle.loads`` imports and calls whatever it
names: a pickle made inside the sandbox could call ``os.system`` on the host. :func:`loads`
resolves only the names listed here: plain Python data, ``collections``, ``datetime`` (with
``zoneinfo`` and ``pytz`` time zones), ``decimal``, ``fractions``, ``uuid``, and the numpy and
pandas reconstructors of arrays, scalars, frames, series, indexes and their dtypes. Anything else,
such as a class defined in the sandbox, is refused with :class:`UnpicklingRefused` naming it.

The list holds data types and reconstructors, never a function that reaches files, processes or
imports, so an allowed name called with any arguments builds a value and nothing more. numpy and
pandas are imported only when a pickle names them, and must then be installed on the host.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

_PLAIN = {
    "builtins": {
        "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
        "range", "set", "slice", "str", "tuple", "Ellipsis", "NotImplemented",
    },
    "collections": {"ChainMap", "Counter", "OrderedDict", "defaultdict", "deque"},
    "datetime": {"date", "datetime", "time", "timedelta", "timezone"},
    "decimal": {"Decimal"},
    "fractions": {"Fraction"},
    "uuid": {"UUID"},
    "zoneinfo": {"ZoneInfo"},
    "pytz": {"_UTC", "_p"},  # pandas < 2 pickles UTC and named zones through these
}

_NUMPY = {
    # numpy 2 moved numpy.core to numpy._core; pickles from either version name one of them.
    **{f"numpy.{core}.multiarray": {"_reconstruct", "scalar"} for core in ("core", "_core")},
    **{f"numpy.{core}.numeric": {"_frombuffer"} for core in ("core", "_core")},
    "numpy": {"dtype", "ndarray"},
}

_PANDAS_TYPES = {
    "Categorical", "CategoricalDtype", "CategoricalIndex", "DataFrame", "DatetimeIndex",
    "DatetimeTZDtype", "Index", "Interval", "IntervalIndex", "MultiIndex", "Period",
    "PeriodDtype", "PeriodIndex", "RangeIndex", "Series", "StringDtype", "Timedelta",
    "TimedeltaIndex", "Timestamp",
}
_PANDAS_ARRAYS = {
    "BooleanArray", "DatetimeArray", "FloatingArray", "IntegerArray", "PeriodArray",
    "StringArray", "TimedeltaArray",
}
_PANDAS = {
    # pandas >= 2 names its public classes; pandas 1.x names the modules defining them.
    "pandas": _PANDAS_TYPES,
    "pandas.arrays": _PANDAS_ARRAYS,
    "pandas._libs.arrays": {"__pyx_unpickle_NDArrayBacked"},
    "pandas._libs.internals": {"_unpickle_block"},
    "pandas._libs.interval": {"Interval"},
    "pandas._libs.tslibs.nattype": {"_nat_unpickle", "__nat_unpickle"},
    "pandas._libs.tslibs.offsets": {
        "BusinessDay", "Day", "Hour", "Micro", "Milli", "Minute", "MonthBegin", "MonthEnd",
        "Nano", "QuarterBegin", "QuarterEnd", "Second", "Week", "YearBegin", "YearEnd",
    },
    "pandas._libs.tslibs.period": {"Period"},
    "pandas._libs.tslibs.timedeltas": {"_timedelta_unpickle"},
    "pandas._libs.tslibs.timestamps": {"_unpickle_timestamp"},
    "pandas.core.arrays.categorical": {"Categorical"},
    "pandas.core.arrays.datetimes": {"DatetimeArray"},
    "pandas.core.arrays.integer": {"IntegerArray"},
    "pandas.core.arrays.floating": {"FloatingArray"},
    "pandas.core.arrays.boolean": {"BooleanArray"},
    "pandas.core.dtypes.dtypes": {"CategoricalDtype", "DatetimeTZDtype", "PeriodDtype"},
    "pandas.core.frame": {"DataFrame"},
    "pandas.core.series": {"Series"},
    "pandas.core.indexes.base": {"Index", "_new_Index"},
    "pandas.core.indexes.datetimes": {"DatetimeIndex", "_new_DatetimeIndex"},
    "pandas.core.indexes.multi": {"MultiIndex"},
    "pandas.core.indexes.numeric": {"Float64Index", "Int64Index", "UInt64Index"},
    "pandas.core.indexes.range": {"RangeIndex"},
    "pandas.core.internals.managers": {"BlockManager", "SingleBlockManager"},
}

ALLOWED: dict[str, frozenset[str]] = {
    module: frozenset(names) for module, names in {**_PLAIN, **_NUMPY, **_PANDAS}.items()
}
"""Module -> the names in it that a pulled pickle may use."""

ALLOWED_SUMMARY = ("plain Python data, collections, datetime, decimal, fractions, uuid, numpy "
                   "and pandas values")


class UnpicklingRefused(pickle.UnpicklingError):
    """The pickle names a callable that is not on the allowed list."""


def _refuse(what: str) -> UnpicklingRefused:
    return UnpicklingRefused(
        f"{what} is not allowed to come back from the sandbox (allowed: {ALLOWED_SUMMARY}); "
        "convert the value to one of those in the sandbox first"
    )


def _class_attribute(owner: Any, name: str) -> Any:
    """``getattr`` as pickles of class methods use it: only ``ZoneInfo._unpickle``."""
    import zoneinfo

    if owner is zoneinfo.ZoneInfo and name == "_unpickle":
        return owner._unpickle
    kind = owner if isinstance(owner, type) else type(owner)
    raise _refuse(f"attribute {name!r} of {kind.__module__}.{kind.__qualname__}")


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` resolves only the names in :data:`ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name == "getattr":
            return _class_attribute
        if name not in ALLOWED.get(module, ()):
            raise _refuse(f"{module}.{name}")
        return super().find_class(module, name)


def loads(data: bytes) -> Any:
    """Unpickle ``data``, refusing every name that is not in :data:`ALLOWED`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()
