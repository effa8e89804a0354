"""The gateway's memory of reasoning signatures by tool-call id, for clients that drop them.

Gemini 3 rejects a replayed function call without the ``thoughtSignature`` it came with. Clients of
dialects with no standard place for it (OpenAI Chat: the signature rides in a vendor field that a
client rebuilding ``tool_calls`` from id/name/arguments loses) get it back from here on replay.

:class:`SignatureMemory` is owned by the engine (``Engine.stores``; no module state), bounded like
the Responses store (entries, bytes, time to live) and keyed per client API key, so one key can
neither read nor overwrite another's. It is deliberately small — ``remember``/``recall``/``resize``
— so it can move to shared storage without its callers changing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class SignatureMemory:
    """(client key, tool-call id) -> signature; least recently used evicted first, optional TTL."""

    def __init__(self, max_items: int = 1000, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic, max_bytes: int = DEFAULT_MAX_BYTES):
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._bytes = 0
        self.resize(max_items, ttl, max_bytes)

    def resize(self, max_items: int, ttl: float | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """New bounds, keeping what still fits (a reload changes settings, not memories)."""
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive")
        self._max_items, self._ttl, self._max_bytes = max_items, ttl, max_bytes
        self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(owner: str | None, call_id: str) -> str:
        return f"{owner or ''}\x00{call_id}"

    def remember(self, owner: str | None, calls: Iterable[tuple[str, str]]) -> None:
        """Keep each (tool-call id, signature); a signature larger than the whole budget is skipped."""
        now = self._clock()
        for call_id, signature in calls:
            key = self._key(owner, call_id)
            if len(key) + len(signature) > self._max_bytes:
                continue
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old[1])
            self._entries[key] = (now, signature)
            self._bytes += len(key) + len(signature)
        self._evict()

    def recall(self, owner: str | None, call_id: str) -> str | None:
        """The signature handed out with ``call_id`` to this client key, or None (unknown, expired)."""
        key = self._key(owner, call_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, signature = entry
        if self._ttl is not None and self._clock() - stored_at >= self._ttl:
            del self._entries[key]
            self._bytes -= len(key) + len(signature)
            return None
        self._entries.move_to_end(key)
        return signature

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self._max_items or self._bytes > self._max_bytes):
            key, (_, signature) = self._entries.popitem(last=False)
            self._bytes -= len(key) + len(signature)
