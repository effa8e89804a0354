"""The gateway's memory of reasoning signatures by tool-call id, for clients that drop them.

Gemini 3 rejects a replayed function call without the ``thoughtSignature`` it came with. Clients of
client codecs with no standard place for it (OpenAI Chat: the signature rides in a vendor field that a
client rebuilding ``tool_calls`` from id/name/arguments loses) get it back from here on replay.

:class:`SignatureMemory` is owned by the engine (``Engine.stores``; no module state), bounded like
the Responses store (entries, bytes, time to live) and keyed per client API key, so one key can
neither read nor overwrite another's. It is deliberately small — ``remember``/``recall``/``resize``
— so it can move to shared storage without its callers changing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from router.lru import BoundedLRU

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def _size(key: str, signature: str) -> int:
    return len(key) + len(signature)


class SignatureMemory:
    """(client key, tool-call id) -> signature; least recently used evicted first, optional TTL."""

    def __init__(self, max_items: int = 1000, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic, max_bytes: int = DEFAULT_MAX_BYTES):
        self._entries: BoundedLRU[str] = BoundedLRU(_size, max_items, ttl, max_bytes, clock)

    def resize(self, max_items: int, ttl: float | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """New bounds, keeping what still fits (a reload changes settings, not memories)."""
        self._entries.resize(max_items, ttl, max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(owner: str | None, call_id: str) -> str:
        return f"{owner or ''}\x00{call_id}"

    def remember(self, owner: str | None, calls: Iterable[tuple[str, str]]) -> None:
        """Keep each (tool-call id, signature); a signature larger than the whole budget is skipped."""
        for call_id, signature in calls:
            self._entries.put(self._key(owner, call_id), signature)

    def recall(self, owner: str | None, call_id: str) -> str | None:
        """The signature handed out with ``call_id`` to this client key, or None (unknown, expired)."""
        return self._entries.get(self._key(owner, call_id))
