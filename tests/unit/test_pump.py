"""The runner's pump on real pipes: frames posted faster than the host reads stay bounded.

A cell can make the runner post frames in a loop (the ``Comm`` logger's records become ``log``
frames, posted without waiting); when the host reads slower than that, the posts must wait
for the pump instead of queueing in the sandbox's memory.
"""

from __future__ import annotations

import os
import threading
import time

from agentkernel.runner.protocol import FrameDecoder, encode_frame
from agentkernel.runner.pump import QUEUE_LIMIT, Pump, guarded_thread

FRAMES = 200
TEXT = "x" * (64 * 1024)


def queued_bytes(pump: Pump) -> int:
    return sum(len(frame) for frame, _ in list(pump._items))


def test_posts_wait_for_a_host_that_reads_slowly() -> None:
    out_r, out_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    for fd in (stdout_r, stderr_r):
        os.set_blocking(fd, False)
    diag_r, diag_w = os.pipe()
    pump = Pump(out_w, stdout_r, stderr_r)
    guarded_thread("pump", pump.run, diag_w).start()

    def log_in_a_loop() -> None:
        for number in range(FRAMES):
            pump.post(encode_frame({"type": "log", "level": "error", "message": f"{number}{TEXT}"}))

    poster = threading.Thread(target=log_in_a_loop, daemon=True)
    poster.start()
    poster.join(1.0)  # the host reads nothing meanwhile
    most = 0
    for _ in range(10):
        most = max(most, queued_bytes(pump))
        time.sleep(0.05)
    assert poster.is_alive(), "the poster never waited"
    assert most <= QUEUE_LIMIT + 2 * len(TEXT), most

    decoder, messages = FrameDecoder(), []
    while len(messages) < FRAMES:  # the host reads: every frame arrives, in order
        messages += [frame["message"] for frame in decoder.feed(os.read(out_r, 1 << 20))]
    poster.join(5)
    assert not poster.is_alive()
    assert [message[: len(str(n))] for n, message in enumerate(messages)] == [
        str(n) for n in range(FRAMES)]
    for fd in (out_r, out_w, stdout_w, stderr_w, diag_r, diag_w):
        os.close(fd)
