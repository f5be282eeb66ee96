"""Make sure an image is present: use the local one, else pull it with progress reported."""

from __future__ import annotations

import logging

from ..engine import Engine
from ..engine.base import ProgressCallback, not_available
from ..errors import ImageNotAvailable

log = logging.getLogger(__name__)

__all__ = ["ProgressCallback", "ensure_image"]


def ensure_image(engine: Engine, image: str, progress: ProgressCallback | None = None) -> None:
    """Return when ``image`` is local; pull it otherwise. Raises ImageNotAvailable."""
    if engine.image_present(image):
        return
    log.info("pulling image %s", image)
    engine.pull(image, progress)
    if not engine.image_present(image):
        raise ImageNotAvailable(not_available(image, "the pull finished but the image is absent"))
