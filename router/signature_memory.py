"""The gateway's memory of reasoning signatures by tool-call id, for clients that drop them.

Gemini 3 rejects a replayed function call without the ``thoughtSignature`` it came with. Clients of
client codecs with no standard place for it (OpenAI Chat: the signature rides in a vendor field that a
client rebuilding ``tool_calls`` from id/name/arguments loses) get it back from here on replay.

:class:`SignatureMemory` is owned by the engine (``Engine.stores``; no module state), bounded like
the Responses store (entries, bytes, time to live) and keyed per client API key, so one key can
neither read nor overwrite another's. With a shared state (``state.backend: redis``) what it
remembers is copied there too, and ``fetch`` brings in what other gateways handed out before a
request is prepared; ids found nowhere are not asked for again for a minute (a tool loop replays its
whole history each turn).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from router.blobs import SharedBlobs, shared_ttl
from router.lru import BoundedLRU

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
KIND = "sig"  # the shared store's name for these entries
ABSENT_ITEMS, ABSENT_TTL = 10_000, 60.0  # ids the shared store did not know, not asked for again


def _size(key: str, signature: str) -> int:
    return len(key) + len(signature)


class SignatureMemory:
    """(client key, tool-call id) -> signature; least recently used evicted first, optional TTL."""

    def __init__(self, max_items: int = 1000, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic, max_bytes: int = DEFAULT_MAX_BYTES):
        self._entries: BoundedLRU[str] = BoundedLRU(_size, max_items, ttl, max_bytes, clock)
        self._absent: BoundedLRU[bool] = BoundedLRU(lambda k, v: len(k), ABSENT_ITEMS, ABSENT_TTL, 1 << 24, clock)
        self._bounds = (max_items, ttl, max_bytes)
        self.remote: SharedBlobs | None = None  # the shared state, when one is configured

    def resize(self, max_items: int, ttl: float | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """New bounds, keeping what still fits (a reload changes settings, not memories)."""
        self._entries.resize(max_items, ttl, max_bytes)
        self._bounds = (max_items, ttl, max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(owner: str | None, call_id: str) -> str:
        return f"{owner or ''}\x00{call_id}"

    def remember(self, owner: str | None, calls: Iterable[tuple[str, str]]) -> Awaitable[Any] | None:
        """Keep each (tool-call id, signature); a signature larger than the whole budget is skipped."""
        shared = []
        max_bytes = self._bounds[2]
        for call_id, signature in calls:
            key = self._key(owner, call_id)
            self._entries.put(key, signature)
            if _size(key, signature) <= max_bytes:  # what the local memory skips is not shared either
                shared.append((key, signature.encode()))
        if self.remote is None or not shared:
            return None
        items, ttl, max_bytes = self._bounds
        return self.remote.put_blobs(KIND, shared, shared_ttl(ttl), items, max_bytes)

    async def fetch(self, owner: str | None, call_ids: Iterable[str]) -> None:
        """Bring in the signatures other gateways handed out for ``call_ids`` that this one lacks."""
        if self.remote is None:
            return
        missing = [key for key in {self._key(owner, c) for c in call_ids}
                   if self._entries.get(key) is None and self._absent.get(key) is None]
        if not missing:
            return
        found = await self.remote.get_blobs(KIND, missing)
        if found is None:  # the shared store is down: ask again next time
            return
        for key, blob in zip(missing, found, strict=True):
            if blob is None:
                self._absent.put(key, True)
            else:
                self._entries.put(key, blob.decode())

    def recall(self, owner: str | None, call_id: str) -> str | None:
        """The signature handed out with ``call_id`` to this client key, or None (unknown, expired)."""
        return self._entries.get(self._key(owner, call_id))
