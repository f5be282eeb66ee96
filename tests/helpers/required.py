"""What a test needs from the machine: missing, it fails the test in CI (CI=true), where
scripts/setup.sh provides everything, and skips it elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """``reason`` names what is missing and what provides it: a failure in CI, else a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
