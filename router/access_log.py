"""The access log: one line per request, written as a data stream, not through ``logging``.

A ``logging`` record with twenty extra fields cost ~55 µs per request (record construction, extra-key
checks, formatting, a write syscall per line). This writer formats each line once with orjson, keeps
the second-resolution timestamp cached, and writes in batches: when 64 KiB are pending, and from a
periodic flush (the app flushes every half second and at shutdown), so a quiet gateway's lines
still appear promptly.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import orjson

FLUSH_BYTES = 64 * 1024


class AccessLog:
    """Formats and buffers access lines (``json`` or ``text``) for a binary stream (stderr by default)."""

    def __init__(self, stream: IO[bytes] | None = None, fmt: str = "text", enabled: bool = True,
                 worker: int | None = None):
        self.stream = stream if stream is not None else sys.stderr.buffer
        self.fmt = fmt
        self.enabled = enabled
        self.worker = worker  # a --workers child's index, in every line it writes
        self._pending: list[bytes] = []
        self._size = 0
        self._second = -1
        self._stamp = ""

    def configure(self, fmt: str, enabled: bool) -> None:
        """Applied on every reload (``logging.format``, ``logging.access_log`` and level)."""
        self.fmt = fmt
        self.enabled = enabled

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        ts = self._timestamp()
        if self.worker is not None:
            fields = {**fields, "worker": self.worker}
        if self.fmt == "json":
            line = orjson.dumps({"ts": ts, "level": "info", "logger": "router.access", **fields}) + b"\n"
        else:
            head = f"{ts} INFO router.access: {fields.get('method')} {fields.get('path')} {fields.get('status')}  "
            line = head.encode() + orjson.dumps(fields) + b"\n"
        self._pending.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stream: drop the lines, never fail a request
            pass
