"""The binary ``application/vnd.amazon.eventstream`` framing (AWS's streaming answers, Bedrock's
ConverseStream): bytes as they arrive → messages, and messages → bytes (the simulator's fake).

One message::

    total length (u32) | headers length (u32) | prelude CRC32 (u32, of the first 8 bytes)
    headers: name length (u8), name, value type (u8), value ...
    payload
    message CRC32 (u32, of every byte before it)

Big-endian throughout. :class:`EventStreamFraming` is the relay's framing for such a stream: it gives
each message as ``(name, payload)`` the way :class:`router.sse.SSEParser` gives SSE events, where
``name`` is the ``:event-type`` of an event, ``exception:<:exception-type>`` of an exception, and
``error:<:error-code>`` of an error (whose payload is then ``{"message": <:error-message>}``). A CRC
mismatch, a length out of bounds or a stream ending inside a message raises :class:`EventStreamError`
(a ValueError: the relay's malformed-stream outcome); when the same read completed intact messages
first, those come out followed by a ``MALFORMED`` frame, which the stream decoder refuses (so the
client gets what arrived intact, then the stream's error).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

MEDIA_TYPE = "application/vnd.amazon.eventstream"
MAX_MESSAGE = 16 * 1024 * 1024  # bytes: AWS's own bound on one message
MAX_HEADERS = 128 * 1024  # bytes of one message's headers (AWS's bound)
PRELUDE = 12  # total length, headers length, prelude CRC
MIN_MESSAGE = PRELUDE + 4  # no headers, no payload, the message CRC
EXCEPTION_PREFIX = "exception:"
ERROR_PREFIX = "error:"
MALFORMED = "!malformed"  # the frame name of a fault after intact messages of the same read

HeaderValue = bool | int | bytes | str | uuid.UUID
_U32 = struct.Struct(">I")
_PRELUDE = struct.Struct(">II")
# value type -> (struct format, size) of the fixed-size integer types
_INTS = {2: struct.Struct(">b"), 3: struct.Struct(">h"), 4: struct.Struct(">i"), 5: struct.Struct(">q"),
         8: struct.Struct(">q")}  # 8: a timestamp, milliseconds since the epoch, read as an integer


class EventStreamError(ValueError):
    """A malformed event stream: its bytes cannot be trusted beyond this point. ``decoded`` holds the
    intact messages the same read completed before the fault (they are still the upstream's answer)."""

    def __init__(self, message: str, decoded: list[Message] | None = None) -> None:
        super().__init__(message)
        self.decoded: list[Message] = decoded or []


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


# --- decoding -------------------------------------------------------------------------------------
class EventStreamDecoder:
    """Incremental: bytes from any chunk boundaries → complete messages, at most ``limit`` bytes each."""

    __slots__ = ("_broken", "_buf", "limit")

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.limit = min(limit, MAX_MESSAGE)
        self._buf = bytearray()
        self._broken: str | None = None  # once malformed, always: nothing after a bad byte is trusted

    def feed(self, chunk: bytes) -> list[Message]:
        if self._broken is not None:
            raise EventStreamError(self._broken)
        buf = self._buf
        buf += chunk
        out: list[Message] = []
        try:
            while len(buf) >= PRELUDE:
                total, headers_len = _prelude(buf, self.limit)
                if len(buf) < total:
                    break  # held: at most ``limit`` bytes plus one read, checked before it was buffered
                out.append(_message(bytes(buf[:total]), headers_len))
                del buf[:total]
        except EventStreamError as e:
            self._broken, self._buf = str(e), bytearray()
            raise EventStreamError(str(e), out) from None
        return out

    def close(self) -> list[Message]:
        """The stream ended: nothing may be left over."""
        if self._broken is not None:
            raise EventStreamError(self._broken)
        if self._buf:
            held, self._buf = len(self._buf), bytearray()
            raise EventStreamError(f"event stream ended inside a message ({held} bytes held)")
        return []


def _prelude(buf: bytearray, limit: int) -> tuple[int, int]:
    total, headers_len = _PRELUDE.unpack_from(buf)
    if zlib.crc32(buf[:8]) != _U32.unpack_from(buf, 8)[0]:
        raise EventStreamError("event stream prelude CRC mismatch")
    if total < MIN_MESSAGE or total > limit:
        raise EventStreamError(f"event stream message length {total} is out of bounds (16..{limit} bytes)")
    if headers_len > MAX_HEADERS or headers_len > total - MIN_MESSAGE:
        raise EventStreamError(f"event stream headers length {headers_len} is out of bounds")
    return total, headers_len


def _message(data: bytes, headers_len: int) -> Message:
    if zlib.crc32(data[:-4]) != _U32.unpack_from(data, len(data) - 4)[0]:
        raise EventStreamError("event stream message CRC mismatch")
    headers = _headers(data[PRELUDE:PRELUDE + headers_len])
    return Message(headers, data[PRELUDE + headers_len:-4])


def _headers(data: bytes) -> dict[str, HeaderValue]:
    out: dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(data):
            name_len = data[pos]
            name = data[pos + 1:pos + 1 + name_len].decode()
            pos += 1 + name_len
            out[name], pos = _value(data, data[pos], pos + 1)
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise EventStreamError(f"event stream header malformed: {type(e).__name__}") from None
    return out


def _value(data: bytes, kind: int, pos: int) -> tuple[HeaderValue, int]:
    if kind in (0, 1):
        return kind == 0, pos
    fixed = _INTS.get(kind)
    if fixed is not None:
        return fixed.unpack_from(data, pos)[0], pos + fixed.size
    if kind in (6, 7):
        size = struct.unpack_from(">H", data, pos)[0]
        raw = data[pos + 2:pos + 2 + size]
        if len(raw) != size:
            raise IndexError("header value cut short")
        return (raw.decode() if kind == 7 else raw), pos + 2 + size
    if kind == 9:
        raw = data[pos:pos + 16]
        if len(raw) != 16:
            raise IndexError("uuid cut short")
        return uuid.UUID(bytes=raw), pos + 16
    raise EventStreamError(f"event stream header value type {kind} is unknown")


class EventStreamFraming:
    """The relay's framing of an event stream: ``(name, payload)`` per message (see the module doc)."""

    __slots__ = ("_decoder",)

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._decoder = EventStreamDecoder(limit)

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """The read's messages; when it breaks after intact ones, those and then a :data:`MALFORMED`
        frame (the stream decoder raises on it, after the intact ones went out to the client)."""
        try:
            return [framed(m) for m in self._decoder.feed(chunk)]
        except EventStreamError as e:
            if not e.decoded:
                raise
            return [*map(framed, e.decoded), (MALFORMED, str(e).encode())]

    def close(self) -> list[tuple[str | None, bytes]]:
        return [framed(m) for m in self._decoder.close()]


def framed(message: Message) -> tuple[str | None, bytes]:
    """A message as ``(name, payload)``."""
    kind = message.header(":message-type")
    if kind == "event":
        return message.header(":event-type"), message.payload
    if kind == "exception":
        return EXCEPTION_PREFIX + (message.header(":exception-type") or ""), message.payload
    if kind == "error":
        text = message.header(":error-message") or ""
        return ERROR_PREFIX + (message.header(":error-code") or ""), orjson.dumps({"message": text})
    raise EventStreamError(f"event stream message type {kind!r} is unknown")


# --- encoding (the simulator's fake; tests) ----------------------------------------------------------
def encode_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """One message's bytes."""
    head = b"".join(_header(name, value) for name, value in headers.items())
    total = PRELUDE + len(head) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(head))
    body = prelude + _U32.pack(zlib.crc32(prelude)) + head + payload
    return body + _U32.pack(zlib.crc32(body))


def _header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode()
    lead = bytes([len(raw_name)]) + raw_name
    if isinstance(value, bool):
        return lead + bytes([0 if value else 1])
    if isinstance(value, int):
        return lead + bytes([5]) + struct.pack(">q", value)
    if isinstance(value, uuid.UUID):
        return lead + bytes([9]) + value.bytes
    raw, kind = (value.encode(), 7) if isinstance(value, str) else (value, 6)
    return lead + bytes([kind]) + struct.pack(">H", len(raw)) + raw


def event(event_type: str, payload: object) -> bytes:
    """An ``event`` message with a JSON payload, as Bedrock sends them."""
    return encode_message({":event-type": event_type, ":content-type": "application/json",
                           ":message-type": "event"}, orjson.dumps(payload))


def exception(exception_type: str, message: str) -> bytes:
    """An ``exception`` message (``{"message": ...}``), as Bedrock sends a failure mid-stream."""
    return encode_message({":exception-type": exception_type, ":content-type": "application/json",
                           ":message-type": "exception"}, orjson.dumps({"message": message}))
