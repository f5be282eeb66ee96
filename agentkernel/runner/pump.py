"""The runner's output side: fds 1 and 2 become pipes, and one thread writes every frame.

``redirect_fds`` takes private copies of the original stdin/stdout/stderr and points fd 0 at
/dev/null and fds 1 and 2 at pipes, so nothing user code (or a child process, or C code) writes
can become a frame. The ``Pump`` forwards those pipes as ``stream`` frames and writes the frames
other threads post, in order, under one lock. Standard library only.
"""

from __future__ import annotations

import codecs
import collections
import os
import select
import threading
import traceback

from .protocol import encode_frame

CHUNK = 64 * 1024  # bytes read from an output pipe at a time
DRAIN_READS = 16  # rounds of reads when draining, so a writer that never stops cannot starve us
LINGER = 0.001  # seconds the pump waits for the rest of a burst of output
# Bytes of posted frames that may wait for the pump; beyond that a thread that posts waits until
# the pump has written them, so frames posted faster than the host reads (a cell logging in a
# loop) slow the poster down instead of filling the sandbox's memory.
QUEUE_LIMIT = 1024 * 1024


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def guarded_thread(name: str, target, diag_fd: int) -> threading.Thread:
    """A daemon thread whose crash is reported on the original stderr and ends the runner."""

    def run() -> None:
        try:
            target()
        except BaseException:
            text = f"agentkernel runner: thread {name} crashed\n" + traceback.format_exc()
            try:
                write_all(diag_fd, text.encode("utf-8", "replace"))
            finally:
                os._exit(70)

    return threading.Thread(target=run, name=name, daemon=True)


def redirect_fds() -> tuple[int, int, int, int, int]:
    """Take private copies of fds 0, 1, 2; point 0 at /dev/null and 1, 2 at new pipes.

    Returns (protocol in, protocol out, diagnostics, stdout pipe, stderr pipe). ``os.dup`` makes
    the copies close-on-exec, so child processes never see the protocol.
    """
    proto_in, proto_out, diag = os.dup(0), os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    readers = []
    for fd in (1, 2):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        os.set_blocking(read_end, False)
        readers.append(read_end)
    return proto_in, proto_out, diag, readers[0], readers[1]


class Pump:
    """Writes every frame, under one lock; its thread forwards fds 1 and 2 as ``stream`` frames.

    Frames posted by any thread are written in order, each after draining the output pipes, so
    output written before a post precedes the posted frame. The main thread posts while
    user code runs (a KeyboardInterrupt can then land anywhere, but never inside a write) and
    writes ``done`` itself through ``finish``, once no interrupt can arrive any more.
    """

    def __init__(self, out_fd: int, stdout_r: int, stderr_r: int) -> None:
        self.tag: str | None = None  # id of the running request, for stream frames
        self._out = out_fd
        self._lock = threading.Lock()
        self._streams = {
            stdout_r: ("stdout", codecs.getincrementaldecoder("utf-8")("replace")),
            stderr_r: ("stderr", codecs.getincrementaldecoder("utf-8")("replace")),
        }
        self._items: collections.deque = collections.deque()
        self._queued = 0  # bytes of the frames in _items
        self._room = threading.Condition()
        self._pump_ident: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def post(self, frame: bytes, wait: bool = False) -> None:
        """Queue ``frame`` for the pump thread; with ``wait``, return once it is written, so
        output written later cannot overtake it. Other threads than the pump's own wait while
        more than QUEUE_LIMIT bytes of frames are queued."""
        written = threading.Event() if wait else None
        with self._room:
            self._items.append((frame, written))
            self._queued += len(frame)
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass
        if written is not None:
            written.wait()
        elif self._queued > QUEUE_LIMIT and threading.get_ident() != self._pump_ident:
            with self._room:
                while self._queued > QUEUE_LIMIT:
                    self._room.wait()

    def finish(self, frame: bytes) -> None:
        """Write the posted frames, all output so far, then ``frame``; reset the tag.

        Called by the main thread only outside the interrupt window.
        """
        with self._lock:
            self._serve_items()
            self._drain()
            for name, decoder in self._streams.values():  # end half-received UTF-8 sequences
                self._send_text(name, decoder.decode(b"", final=True))
            self._write(frame)
            self.tag = None

    def flush(self) -> None:
        """Write the posted frames and the output so far."""
        with self._lock:
            self._serve_items()
            self._drain()

    def run(self) -> None:
        """Thread body: forward output as it comes, write posted frames."""
        self._pump_ident = threading.get_ident()
        busy = False
        while True:
            ready = select.select([*self._streams, self._wake_r], [], [])[0]
            if self._wake_r not in ready and not busy:
                # Let the rest of a burst arrive (print writes its pieces separately), so it
                # travels as one frame; a post ends the wait at once.
                select.select([self._wake_r], [], [], LINGER)
            with self._lock:
                try:
                    os.read(self._wake_r, CHUNK)
                except BlockingIOError:
                    pass
                self._serve_items()
                busy = self._drain() >= CHUNK

    def _serve_items(self) -> None:
        while self._items:
            frame, written = self._items.popleft()
            self._drain()
            self._write(frame)
            with self._room:
                self._queued -= len(frame)
                self._room.notify_all()
            if written is not None:
                written.set()

    def _write(self, frame: bytes) -> None:
        try:
            write_all(self._out, frame)
        except OSError:  # the host is gone: nobody left to talk to
            os._exit(0)

    def _forward(self, fd: int) -> int:
        """Send one chunk of what output pipe ``fd`` holds; return its size in bytes."""
        name, decoder = self._streams[fd]
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return 0
        if not data:  # every write end was closed by user code
            del self._streams[fd]
        self._send_text(name, decoder.decode(data))
        return len(data)

    def _send_text(self, name: str, text: str) -> None:
        if text:
            frame = {"type": "stream", "id": self.tag, "name": name, "text": text}
            self._write(encode_frame(frame))

    def _drain(self) -> int:
        """Forward what the output pipes hold right now; return the number of bytes."""
        total = 0
        for _ in range(DRAIN_READS):
            ready = select.select(list(self._streams), [], [], 0)[0]
            if not ready:
                break
            for fd in ready:
                total += self._forward(fd)
        return total
