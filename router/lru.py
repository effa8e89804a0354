"""One bounded, expiring LRU map for the gateway's in-process memories (the Responses store, the
tool-call signature memory): bounded by entries and by a size in bytes, with an optional time to
live, least recently used evicted first."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class BoundedLRU(Generic[V]):
    """key -> value; ``size(key, value)`` is what an entry counts against ``max_bytes``."""

    def __init__(self, size: Callable[[str, V], int], max_items: int, ttl: float | None, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic):
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._bytes = 0
        self.resize(max_items, ttl, max_bytes)

    def resize(self, max_items: int, ttl: float | None, max_bytes: int) -> None:
        """New bounds, keeping what still fits (a reload changes settings, not what is remembered)."""
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive")
        self._max_items, self._ttl, self._max_bytes = max_items, ttl, max_bytes
        self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, value: V) -> None:
        """Keep ``value``; one larger than the whole byte budget is not kept (it would evict everything)."""
        self.pop(key)
        size = self._size(key, value)
        if size > self._max_bytes:
            return
        self._entries[key] = (self._clock(), value)
        self._bytes += size
        self._evict()

    def get(self, key: str) -> V | None:
        """The value, or None when unknown or expired (an expired entry is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if self._ttl is not None and self._clock() - stored_at >= self._ttl:
            self.pop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def pop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= self._size(key, entry[1])

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self._max_items or self._bytes > self._max_bytes):
            key, (_, value) = self._entries.popitem(last=False)
            self._bytes -= self._size(key, value)
