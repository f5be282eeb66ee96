"""File-tree helpers for tests."""

from __future__ import annotations

import os
from pathlib import Path


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (links not followed)."""
    return {str(Path(folder, name)) for folder, dirs, files in os.walk(root)
            for name in dirs + files}
