"""Server-Sent Events framing of upstream streams: bytes as they arrive → (event name, data) pairs."""

from __future__ import annotations

from router.server import DEFAULT_MAX_EVENT_BYTES

LINE_COST = 64  # what a held line or piece costs beyond its bytes (list slot, bytes object header)
LONG_LINE = 1024  # an unfinished line this long is kept in pieces, never copied again per read


class EventTooLarge(ValueError):
    """An SSE event over the parser's limit (a ValueError: the engine's ``malformed`` outcome)."""


class SSEParser:
    """Incremental Server-Sent Events framing (``\\n``, ``\\r\\n`` and mixed line ends), bounded.

    ``limit`` bounds one event: every byte since the last blank line, the line still arriving included,
    plus ``LINE_COST`` per data line and per piece held. An unfinished line of ``LONG_LINE`` bytes or
    more is kept as a list of its pieces and each later chunk is only searched for the line's end: a
    long line costs linear time, not a copy and a rescan of the whole line per chunk, and no buffer
    ever doubles in place.
    """

    __slots__ = ("_buf", "_data", "_event", "_more", "_size", "limit")

    def __init__(self, limit: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.limit = limit
        self._buf = b""  # the unfinished last line (its first piece)
        self._more: list[bytes] = []  # the unfinished line's later pieces, when it spans chunks
        self._size = 0  # cost of the current event so far, the unfinished line included
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        buf = self._buf
        if buf:
            if self._more or len(buf) >= LONG_LINE:  # look for the line's end before copying the line
                nl = chunk.find(b"\n")
                if nl < 0:  # the line goes on
                    return self._collect(chunk)
                if self._size + nl > self.limit:
                    raise self._too_large()
                buf = b"".join([buf, *self._more, chunk])
                self._more = []
            else:  # a short unfinished line (the usual event split by a read) is cheaper to copy
                buf += chunk
        else:
            buf = chunk
        out: list[tuple[str | None, bytes]] = []
        start = 0
        mark = -1  # where the event after the last blank line starts
        find = buf.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            end = nl - 1 if nl > start and buf[nl - 1] == 13 else nl
            line = buf[start:end]
            start = nl + 1
            if not line:
                if self._data:
                    out.append((self._event, self._data[0] if len(self._data) == 1 else b"\n".join(self._data)))
                self._event = None
                self._data = []
                mark = start
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line == b"data":  # a field name alone means an empty value
                self._data.append(b"")
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")
        if mark == start:
            # The last line ended an event: only the unfinished line (at most this read) is held, and
            # it is counted once it goes on, which is cheaper than measuring it on every read.
            self._size = 0
        else:
            size = self._size + len(chunk) if mark < 0 else len(buf) - mark
            if size + LINE_COST * len(self._data) > self.limit:  # tiny "data:" lines cost more than their bytes
                raise self._too_large()
            self._size = size
        self._buf = buf[start:]
        return out

    def _collect(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Keep a chunk without a line end as one more piece of the unfinished line."""
        size = self._size + len(chunk) + LINE_COST
        if size + LINE_COST * len(self._data) > self.limit:
            raise self._too_large()
        self._more.append(chunk)
        self._size = size
        return []

    def _too_large(self) -> EventTooLarge:
        return EventTooLarge(f"an SSE event is larger than {self.limit} bytes "
                             "(server.upstream_limits.max_event_bytes)")

    def close(self) -> list[tuple[str | None, bytes]]:
        """Events left when the stream ended without a final blank line."""
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf = b""
        self._more = []
        self._size = 0
        return out

