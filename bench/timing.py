"""How the bench times a start: the median of several, one after another."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

START_SAMPLES = 9  # starts per start row (the median is the row's value): 5 left the
# cold row's ratio moving by 0.1 between runs on this noisy machine
K = TypeVar("K")


def median_start(start: Callable[[], tuple[float, K]], stop: Callable[[K], None],
                 pause: float = 1.0, samples: int = START_SAMPLES) -> tuple[float, K]:
    """The median seconds of ``samples`` calls of ``start`` (each giving its seconds and its
    kernel), ``pause`` seconds apart; every kernel is stopped but the last, returned for the
    rows that use it."""
    times = []
    for sample in range(samples):
        seconds, kernel = start()
        times.append(seconds)
        if sample < samples - 1:
            stop(kernel)
            time.sleep(pause)
    return statistics.median(times), kernel
