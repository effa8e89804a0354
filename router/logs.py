"""Logging set-up: plain text or one JSON object per line, with the record's extra fields."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        return base + ("  " + orjson.dumps(extra, default=str).decode() if extra else "")


class _Worker(logging.Filter):
    """Stamps every record with the ``--workers`` child that wrote it (a field of its own)."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure(level: str = "info", fmt: str = "text", worker: int | None = None) -> None:
    """Process-wide logging set-up, called once by the CLI (never by library code); ``worker``: the
    index of a ``--workers`` child, carried by each of its lines."""
    # The access log writes a record per request: skip the per-record work nobody reads.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (file/line) per record
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Throttle:
    """At most one message per key every ``interval`` seconds, counting the ones held back: for
    warnings a misbehaving upstream could otherwise trigger on every request."""

    MAX_KEYS = 1024  # keys are config names (providers); a bound all the same

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None to drop this message; else how many were dropped for ``key`` since the last one."""
        now = self.clock()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if key not in self._next and len(self._next) >= self.MAX_KEYS:
            self._next.clear()
            self._held.clear()
        self._next[key] = now + self.interval
        return self._held.pop(key, 0)
