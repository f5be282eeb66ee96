"""One request's frames on their way from the reader thread to the requester, bounded.

The bound is the host's back-pressure: when a requester falls behind, the reader thread waits
for room, stops reading the runner's stream, and the runner's (so the cell's) writes block.
"""

from __future__ import annotations

import threading
from collections import deque

# Bytes of frames one request may have waiting for its requester. Beyond that the reader thread
# waits, so it stops reading the runner's stream and the runner's output writes block: a cell
# that prints faster than the host consumes is slowed down instead of filling host memory.
INBOX_LIMIT = 8 * 1024 * 1024
# Characters of consecutive same-stream output that execute() hands over as one event when
# frames have queued up (the requester fell behind): fewer, larger iopub messages in a flood.
STREAM_MERGE_LIMIT = 256 * 1024


class Inbox:
    """Frames for one request, filled by the reader thread, consumed by the requester.

    At most ``limit`` bytes (their size on the wire) wait here: ``put`` blocks the reader thread
    while the inbox is full, until the requester takes frames or the inbox is closed.
    """

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self.frames: deque[dict] = deque()
        self.arrived = threading.Event()
        self._sizes: deque[int] = deque()
        self._held = 0
        self._limit = limit
        self._closed = False
        self._room = threading.Condition()

    def put(self, frame: dict | None, size: int = 0) -> None:
        """Queue ``frame``, waiting for room; None only wakes the requester."""
        if frame is not None:
            with self._room:
                while self._held >= self._limit and not self._closed:
                    self._room.wait()
                if self._closed:
                    return
                self.frames.append(frame)
                self._sizes.append(size)
                self._held += size
        self.arrived.set()

    def pop(self) -> dict:
        """Take the first frame (there must be one) and make room for the reader."""
        with self._room:
            frame = self.frames.popleft()
            self._held -= self._sizes.popleft()
            self._room.notify_all()
        return frame

    def pop_stream(self, limit: int = STREAM_MERGE_LIMIT) -> dict:
        """Take the first frame, a stream frame, merged with the queued stream frames of the
        same name that directly follow it, up to ``limit`` characters."""
        frame = self.pop()
        parts, size = [frame["text"]], len(frame["text"])
        while size < limit and self.frames:
            following = self.frames[0]
            if following["type"] != "stream" or following["name"] != frame["name"]:
                break
            parts.append(self.pop()["text"])
            size += len(parts[-1])
        return frame if len(parts) == 1 else {**frame, "text": "".join(parts)}

    def close(self) -> None:
        """No requester any more: release a waiting reader; later frames are dropped."""
        with self._room:
            self._closed = True
            self._room.notify_all()
