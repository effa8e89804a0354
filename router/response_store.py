"""Stored conversations for the Responses API's ``previous_response_id`` and ``store``.

:class:`ResponseStore` is a bounded in-memory LRU owned by the engine (no module state). It keeps
codec-neutral canonical messages, so a stored conversation can continue on any upstream.
Entries are kept serialized: callers can neither mutate a stored conversation nor see later edits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import orjson

from router.canonical import CanonicalRequest, Choice, Event, aggregate
from router.lru import BoundedLRU

DEFAULT_MAX_BYTES = 256 * 1024 * 1024

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

    def resize(self, max_items: int, ttl: float | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """New bounds, keeping what still fits (a reload changes settings, not conversations)."""
        self._entries.resize(max_items, ttl, max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response_id: str, system: str | None, messages: list[dict[str, Any]]) -> None:
        self._entries.put(response_id, orjson.dumps([system, messages]))

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
