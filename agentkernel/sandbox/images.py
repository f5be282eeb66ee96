"""Make sure an image is present: use the local one, else pull it with progress reported."""

from __future__ import annotations

import logging

from ..engine import Engine
from ..engine.base import ProgressCallback, not_available
from ..errors import ImageNotAvailable

log = logging.getLogger(__name__)

__all__ = ["ProgressCallback", "ensure_image"]


def ensure_image(engine: Engine, image: str, progress: ProgressCallback | None = None) -> str:
    """The id of ``image``, pulled first when it is not local. Raises ImageNotAvailable."""
    try:
        return engine.image_id(image)
    except ImageNotAvailable:
        pass
    log.info("pulling image %s", image)
    engine.pull(image, progress)
    try:
        return engine.image_id(image)
    except ImageNotAvailable:
        raise ImageNotAvailable(not_available(image, "the pull finished but the image is absent")
                                ) from None
