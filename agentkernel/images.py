"""Make sure an image is present: use the local one, else pull it with progress reported."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from docker.errors import APIError, ImageNotFound, NotFound

from .engine import Engine
from .errors import ImageNotAvailable

log = logging.getLogger("agentkernel")

ProgressCallback = Callable[[dict[str, Any]], None]


def split_reference(image: str) -> tuple[str, str | None]:
    """``repo[:tag][@digest]`` -> (repo, tag-or-digest); a port in the registry is not a tag."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def image_present(engine: Engine, image: str) -> bool:
    try:
        engine.api.inspect_image(image)
        return True
    except (ImageNotFound, NotFound):
        return False


def ensure_image(engine: Engine, image: str, progress: ProgressCallback | None = None) -> None:
    """Return when ``image`` is local; pull it otherwise. Raises ImageNotAvailable."""
    if image_present(engine, image):
        return
    repo, tag = split_reference(image)
    log.info("pulling image %s", image)
    try:
        for event in engine.api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise ImageNotAvailable(_not_available(image, str(event["error"])))
            if progress is not None:
                progress(event)
    except APIError as err:
        raise ImageNotAvailable(_not_available(image, err.explanation or str(err))) from None
    except ImageNotAvailable:
        raise
    except Exception as err:  # connection reset mid-pull, malformed stream
        raise ImageNotAvailable(_not_available(image, str(err))) from None
    if not image_present(engine, image):
        raise ImageNotAvailable(_not_available(image, "the pull finished but the image is absent"))


def _not_available(image: str, reason: str) -> str:
    reason = " ".join(str(reason).split())[:200]
    return (
        f"image {image!r} is not available locally or from its registry ({reason}); "
        "pull or build it first (e.g. `agentkernel image build --tag NAME`)"
    )
