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

A value built from allowed names can still be expensive: ``Fraction('1e100000000')`` burns CPU
for ever, ``bytearray(10**10)`` or ``list(range(10**9))`` takes all memory. So
:func:`loads_bounded` rebuilds the value in a separate process limited in memory and CPU time;
that process sends back the value re-pickled from the objects it rebuilt (honest data, whose
size is what it holds) with the memory the rebuilt value took there, and only a value whose
re-pickled size is within the limit and whose memory is within 8 times that is loaded here,
through the same restricted unpickler. No allowed name does costly work on either side: a
Fraction is built from integers of at most :data:`INT_DIGITS` digits (never from a decimal
exponent to expand), and ints parse from text within that same limit, Python's own.
"""

from __future__ import annotations

import fractions
import io
import os
import pickle
import re
import resource
import subprocess
import sys
from typing import Any

from .errors import TooLarge, one_line

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


INT_DIGITS = 4300
"""Most decimal digits of an int parsed from text, and of a Fraction's parts (Python's default
``sys.get_int_max_str_digits()``: a larger int cannot be printed on the host either)."""
_FRACTION_BITS = int(INT_DIGITS * 3.33) + 1  # INT_DIGITS decimal digits, in bits
_FRACTION_TEXT = re.compile(r"\s*([-+]?\d+)(?:/(\d+))?\s*")


def _fraction(*args: Any) -> fractions.Fraction:
    """``fractions.Fraction`` as pickles call it: two ints (Python 3.11 on) or the text
    ``"n/d"`` (before), each part at most INT_DIGITS digits, so the gcd it takes is cheap and
    no exponent (``'1e100000000'``) is ever expanded."""
    parts: tuple[Any, ...] = args
    if len(args) == 1 and isinstance(args[0], str):
        text = _FRACTION_TEXT.fullmatch(args[0][:2 * INT_DIGITS + 8])
        if text is None or len(args[0]) > 2 * INT_DIGITS + 8:
            raise UnpicklingRefused("a Fraction made from text other than 'n/d' (as pickles "
                                    f"write it, at most {INT_DIGITS} digits each) is refused")
        parts = (int(text[1]), int(text[2] or 1))
    if not 1 <= len(parts) <= 2 or any(type(part) is not int for part in parts):
        raise UnpicklingRefused("a Fraction made from anything but ints or 'n/d' text is "
                                "refused")
    if any(part.bit_length() > _FRACTION_BITS for part in parts):
        raise UnpicklingRefused(f"a Fraction with a part over {INT_DIGITS} digits is refused "
                                "(rebuilding it on the host would take its CPU)")
    return fractions.Fraction(*parts)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` resolves only the names in :data:`ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name == "getattr":
            return _class_attribute
        if name not in ALLOWED.get(module, ()):
            raise _refuse(f"{module}.{name}")
        if module == "fractions":
            return _fraction
        return super().find_class(module, name)


def loads(data: bytes) -> Any:
    """Unpickle ``data``, refusing every name that is not in :data:`ALLOWED`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


WORKER_BASE_MB = 256  # an interpreter with numpy and pandas imported, one thread each
WORKER_CPU_S = 5
WORKER_WALL_S = 30
MEMORY_FACTOR = 8
"""The most memory a pulled value may take on the host, in times its pickled size limit."""
_REFUSED, _FAILED, _TOO_BIG = 3, 4, 5  # the worker's exit codes


def loads_bounded(data: bytes, max_bytes: int) -> Any:
    """Unpickle untrusted ``data`` (at most ``max_bytes``) with bounded memory and CPU.

    The value is rebuilt in a child process allowed ``WORKER_BASE_MB`` plus
    ``MEMORY_FACTOR`` times ``max_bytes`` of memory and ``WORKER_CPU_S`` seconds of CPU; it is
    loaded here only when, rebuilt, it pickles to at most ``max_bytes`` and took at most
    ``MEMORY_FACTOR`` times that in memory there. Refused names raise UnpicklingRefused, and a
    value beyond those bounds raises TooLarge.
    """
    if len(data) > max_bytes:
        raise TooLarge(f"the value is {len(data)} bytes pickled, over the {max_bytes}-byte limit")
    memory = (WORKER_BASE_MB << 20) + MEMORY_FACTOR * max_bytes

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (WORKER_CPU_S, WORKER_CPU_S + 1))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONINTMAXSTRDIGITS": str(INT_DIGITS)}
    try:
        done = subprocess.run([sys.executable, "-m", __name__, str(max_bytes)], input=data,
                              capture_output=True, preexec_fn=limit, env=env,
                              timeout=WORKER_WALL_S)
    except subprocess.TimeoutExpired:
        raise TooLarge(f"rebuilding the value took more than {WORKER_WALL_S} s") from None
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    message = one_line(lines[-1]) if lines else ""
    if done.returncode == 0 and len(done.stdout) <= max_bytes:
        return loads(done.stdout)
    if done.returncode == _REFUSED:
        raise UnpicklingRefused(message)
    if done.returncode == _TOO_BIG:
        raise TooLarge(message)
    if done.returncode == _FAILED and not message.startswith(("MemoryError", "RecursionError")):
        raise pickle.UnpicklingError(f"cannot rebuild the value: {message}")
    raise TooLarge(
        f"rebuilding the value needs more than {memory >> 20} MB of memory or "
        f"{WORKER_CPU_S} s of CPU (limits from max_pull_mb){': ' + message if message else ''}"
    )


def _resident() -> int:
    """This process's resident memory now, in bytes (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _worker() -> None:
    """``python -m agentkernel.safepickle MAX_BYTES``: restricted-unpickle stdin and re-pickle
    it to stdout, or refuse a value over the bounds (see :func:`loads_bounded`)."""
    max_bytes = int(sys.argv[1])
    data = sys.stdin.buffer.read()
    for module in ("numpy", "pandas"):  # imported first: their own memory is not the value's
        if module.encode() in data:
            try:
                __import__(module)
            except ImportError:
                pass  # named as a global: find_class says so
    before = _resident()
    try:
        value = loads(data)
    except UnpicklingRefused as refused:
        print(refused, file=sys.stderr)
        sys.exit(_REFUSED)
    except Exception as err:
        print(f"{type(err).__name__}: {one_line(err, 200)}", file=sys.stderr)
        sys.exit(_FAILED)
    taken = max(0, _resident() - before)
    del data
    if taken > MEMORY_FACTOR * max_bytes:
        print(f"rebuilt, the value takes {_size(taken)} of memory, over {MEMORY_FACTOR} times "
              f"the {_size(max_bytes)} limit (max_pull_mb)", file=sys.stderr)
        sys.exit(_TOO_BIG)
    pickled = pickle.dumps(value, protocol=4)
    if len(pickled) > max_bytes:
        print(f"rebuilt, the value is {_size(len(pickled))} pickled, over the "
              f"{_size(max_bytes)} limit (max_pull_mb)", file=sys.stderr)
        sys.exit(_TOO_BIG)
    sys.stdout.buffer.write(pickled)


def _size(count: int) -> str:
    return f"{count / (1 << 20):.1f} MB" if count >= 1 << 20 else f"{count} bytes"


if __name__ == "__main__":
    _worker()
