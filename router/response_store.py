"""Stored conversations for the Responses API's ``previous_response_id`` and ``store``.

:class:`ResponseStore` is a bounded in-memory LRU owned by the engine (no module state). It keeps
codec-neutral canonical messages, so a stored conversation can continue on any upstream.
Entries are kept serialized: callers can neither mutate a stored conversation nor see later edits.

With a shared state (``state.backend: redis``) each entry is also copied there (in the background,
bounded by the same items, bytes and time to live, for all gateways together), and a conversation this
process does not hold is read from there before the request is prepared (``fetch``). Entries never
change once written, so a local copy is never stale; one read from the shared store lives locally
for at most one more time to live.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from router.blobs import SharedBlobs, shared_ttl
from router.canonical import CanonicalRequest, Choice, Event, aggregate
from router.lru import BoundedLRU

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
KIND = "resp"  # the shared store's name for these entries

Conversation = tuple[str | None, list[dict[str, Any]]]  # (system prompt, canonical messages)


def _size(key: str, blob: bytes) -> int:
    return len(blob)


class ResponseStore:
    """response id -> conversation, least recently used evicted first, optional time to live.

    Bounded twice: by entries and by stored bytes (a conversation can be as large as a request
    body, and a chain of ``previous_response_id`` calls stores the growing history each time).
    """

    def __init__(
        self,
        max_items: int = 1000,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self._entries: BoundedLRU[bytes] = BoundedLRU(_size, max_items, ttl, max_bytes, clock)
        self._bounds = (max_items, ttl, max_bytes)
        self.remote: SharedBlobs | None = None  # the shared state, when one is configured

    def resize(self, max_items: int, ttl: float | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """New bounds, keeping what still fits (a reload changes settings, not conversations)."""
        self._entries.resize(max_items, ttl, max_bytes)
        self._bounds = (max_items, ttl, max_bytes)

    @property
    def unavailable(self) -> bool:
        """A shared store is configured and cannot be read now: a miss may be another gateway's entry."""
        return self.remote is not None and not self.remote.healthy

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response_id: str, system: str | None, messages: list[dict[str, Any]]) -> Awaitable[Any] | None:
        """Keep a conversation; the shared store's write (to await before the client can follow up),
        or None."""
        blob = orjson.dumps([system, messages])
        self._entries.put(response_id, blob)
        items, ttl, max_bytes = self._bounds
        if self.remote is None or len(blob) > max_bytes:
            return None
        return self.remote.put_blobs(KIND, ((response_id, blob),), shared_ttl(ttl), items, max_bytes)

    async def fetch(self, response_id: str) -> None:
        """Bring in a conversation another gateway stored, when this one does not hold it."""
        if self.remote is None or self._entries.get(response_id) is not None:
            return
        found = await self.remote.get_blobs(KIND, [response_id])
        if found and found[0] is not None:
            self._entries.put(response_id, found[0])

    def get(self, response_id: str) -> Conversation | None:
        """The stored (system, messages), or None when unknown or expired."""
        blob = self._entries.get(response_id)
        if blob is None:
            return None
        system, messages = orjson.loads(blob)
        return system, messages


def conversation_after(request: CanonicalRequest, events: list[Event]) -> list[dict[str, Any]]:
    """``request.messages`` plus the assistant turn the events produced (what the engine stores)."""
    choice = next((c for c in aggregate(events).choices if c.index == 0), Choice())
    parts: list[dict[str, Any]] = []
    if choice.reasoning or choice.reasoning_signature:
        parts.append({"type": "thinking", "text": choice.reasoning, "signature": choice.reasoning_signature})
    if choice.text:
        parts.append({"type": "text", "text": choice.text})
    parts.extend(
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments} for c in choice.tool_calls
    )
    messages = list(request.messages)
    if parts:
        messages.append({"role": "assistant", "content": parts})
    return messages


def _call_names(messages: list[dict[str, Any]]) -> dict[str, str]:
    return {
        part["id"]: part["name"]
        for msg in messages
        if msg.get("role") == "assistant"
        for part in msg.get("content", [])
        if part.get("type") == "tool_call"
    }


def _named_result(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    if message.get("role") != "tool":
        return message
    content = [
        {**part, "name": names.get(part.get("tool_call_id", ""))}
        if part.get("type") == "tool_result" and part.get("name") is None
        else part
        for part in message.get("content", [])
    ]
    return {**message, "content": content}


def apply_previous(request: CanonicalRequest, stored: Conversation) -> CanonicalRequest:
    """A copy of ``request`` continuing a stored conversation.

    The stored messages go first; the stored system prompt applies when the request has none.
    Tool results answering calls from the stored turns get their function name filled in.
    """
    system, previous = stored
    names = _call_names(previous)
    messages = [_named_result(m, names) for m in request.messages]
    return dataclasses.replace(request, messages=[*previous, *messages], system=request.system or system)
