"""What the in-process stores (Responses, signatures) see of the shared state: a place to copy their
entries to and read them back from (``router.shared_state.SharedState`` with ``state.backend: redis``)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

WEEK = 7 * 86_400.0


class SharedBlobs(Protocol):
    up: bool  # False while the backend is unreachable: reads answer None at once

    @property
    def healthy(self) -> bool: ...  # up, and its last command did not fail

    async def get_blobs(self, kind: str, keys: list[str]) -> list[bytes | None] | None: ...

    def put_blobs(self, kind: str, items: Iterable[tuple[str, bytes]], ttl: float, max_items: int,
                  max_bytes: int) -> Awaitable[Any] | None: ...  # the write, None when none is sent


def shared_ttl(ttl: float | None) -> float:
    """A shared entry's time to live: the local store's, or a week when that keeps entries forever (a
    shared store is bounded in time too: gateways that stopped writing leave nothing behind)."""
    return ttl if ttl else WEEK
