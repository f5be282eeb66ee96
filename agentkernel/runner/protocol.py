"""The runner protocol's frames, shared by the host and the in-container runner.

Each frame is a 4-byte big-endian unsigned length, then that many bytes of UTF-8 JSON (one
object with a string ``"type"``); see docs/ARCHITECTURE.md, "Runner protocol". The host imports
this module and the runner is sent with it (``runner_source``), so both sides use one codec.
Standard library only, Python 3.8+, no side effects on import.
"""

from __future__ import annotations

import json
import numbers
import struct
from binascii import b2a_base64
from collections.abc import Iterable

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


def json_default(obj: object) -> object:
    """What JSON cannot hold, as jupyter_client's ``json_default`` packs it into messages:
    dates as ISO strings, bytes as base64, other iterables as lists, numbers as int/float."""
    from datetime import date, datetime

    if isinstance(obj, datetime):
        text = obj.isoformat() if obj.tzinfo else obj.isoformat() + "Z"
        return text.replace("+00:00", "Z")
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return b2a_base64(bytes(obj), newline=False).decode("ascii")
    if isinstance(obj, Iterable):
        return list(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=json_default)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), default=json_default)
# Fields every frame of a type must carry, with their types; a frame without them breaks the
# protocol (the host hands its callers well-formed events only).
FRAME_FIELDS = {
    "stream": {"name": str, "text": str},
    "display": {"data": dict},
    "result": {"data": dict},
    "error": {"ename": str, "evalue": str, "traceback": list},
    "input_request": {"prompt": str},
    "comm_open": {"comm_id": str, "target_name": str, "data": dict},
    "comm_msg": {"comm_id": str, "data": dict},
    "comm_close": {"comm_id": str, "data": dict},
    "fatal": {"message": str},
    "exited": {"code": int},
    "done": {"status": str},
}
OPTIONAL_DICTS = ("metadata", "transient", "user_expressions")


class ProtocolError(Exception):
    """A byte stream that is not a valid sequence of frames (the message is one line)."""


def encode_frame(obj: dict) -> bytes:
    """Return ``obj`` as one frame: 4-byte big-endian length, then UTF-8 JSON."""
    try:
        body = _ENCODER.encode(obj).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: JSON can carry them escaped
        body = _ASCII_ENCODER.encode(obj).encode("ascii")
    if len(body) > MAX_FRAME:
        raise ProtocolError(
            f"{obj.get('type')} frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit"
        )
    return _HEADER.pack(len(body)) + body


def _decode_body(body: bytearray) -> dict:
    """Parse one frame body; raise ProtocolError unless it is a JSON object with a str "type"."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"frame is not valid UTF-8: {exc}") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError('frame is not a JSON object with a string "type"')
    return obj


class FrameDecoder:
    """Incremental frame decoder: feed bytes as they arrive, get the complete frames back.

    After a ProtocolError the stream cannot be resynchronised: every later feed raises again.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: str | None = None

    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[dict]:
        """Append ``data`` and return every frame completed by it, in order."""
        if self._error is not None:
            raise ProtocolError(self._error)
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        try:
            while len(buf) - pos >= 4:
                (size,) = _HEADER.unpack_from(buf, pos)
                if size > MAX_FRAME:
                    raise ProtocolError(f"frame length {size} exceeds the {MAX_FRAME}-byte limit")
                end = pos + 4 + size
                if end > len(buf):
                    break
                frames.append(_decode_body(buf[pos + 4 : end]))
                pos = end
        except ProtocolError as exc:
            self._error = str(exc)
            raise
        finally:
            del buf[:pos]
        return frames


def check_frame(frame: dict) -> None:
    """Raise ProtocolError unless ``frame`` carries the fields its type needs (FRAME_FIELDS).

    The runner shares its process with user code, which can write anything to the protocol's
    file descriptor: the host trusts no frame's shape.
    """
    kind = frame["type"]
    if not isinstance(frame.get("id"), (str, type(None))):
        raise ProtocolError(f"{kind} frame with a non-string id")
    for key, expected in FRAME_FIELDS.get(kind, {}).items():
        if not isinstance(frame.get(key), expected):
            raise ProtocolError(f"{kind} frame without a valid {key!r}")
    for key in OPTIONAL_DICTS:
        if not isinstance(frame.get(key, {}), dict):
            raise ProtocolError(f"{kind} frame with a non-object {key!r}")
    if kind == "stream" and frame["name"] not in ("stdout", "stderr"):
        raise ProtocolError(f"stream frame for unknown stream {frame['name'][:40]!r}")
    if kind == "error" and not all(isinstance(line, str) for line in frame["traceback"]):
        raise ProtocolError("error frame with a non-string traceback line")
    if not all(isinstance(item, str) for item in _list_field(frame, "buffers")):
        raise ProtocolError(f"{kind} frame with a non-string buffer")
    if not all(isinstance(item, dict) for item in _list_field(frame, "payload")):
        raise ProtocolError(f"{kind} frame with a non-object payload")


def _list_field(frame: dict, key: str) -> list:
    """The optional list ``frame[key]`` ([] when absent); ProtocolError when not a list."""
    value = frame.get(key, [])
    if not isinstance(value, list):
        raise ProtocolError(f"{frame['type']} frame with a non-list {key!r}")
    return value
