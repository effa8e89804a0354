"""Reasoning signatures on OpenAI Chat tool calls (a helper of ``openai_chat``; not a codec).

OpenAI Chat has no field for the signature of the reasoning behind a tool call, which Gemini 3
requires back on replay. It rides where Gemini's own OpenAI-compatible endpoint puts it,
``tool_calls[].extra_content.google.thought_signature``, out (responses and stream deltas) and
in (replayed assistant messages). The openai SDK keeps that unknown field on the message object,
but a client that rebuilds ``tool_calls`` from id/name/arguments loses it: for those the engine
hands the signed calls of each response to :func:`remember_signatures`, and :func:`prepare`
puts a remembered signature back on a replayed call that came without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any

from router.canonical import CanonicalRequest, ResponseContext, fill_call_signatures
from router.codecs import Stores
from router.errors import BadRequest


def signature_field(signature: str) -> dict[str, Any]:
    """A tool call's ``extra_content`` for its signature."""
    return {"google": {"thought_signature": signature}}


def handed_out(ctx: ResponseContext, call_id: str, signature: str) -> None:
    """Note a call that went to the client with its signature (the engine remembers it)."""
    if ctx.signed_calls is None:
        ctx.signed_calls = []
    ctx.signed_calls.append((call_id, signature))


def call_signature(call: dict[str, Any], param: str) -> str | None:
    """``extra_content.google.thought_signature`` of a replayed tool call, when it carries one."""
    extra = call.get("extra_content")
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise BadRequest("extra_content must be an object", param=f"{param}.extra_content")
    google = extra.get("google")
    if google is None:
        return None
    if not isinstance(google, dict):
        raise BadRequest("extra_content.google must be an object", param=f"{param}.extra_content.google")
    signature = google.get("thought_signature")
    if signature is not None and not isinstance(signature, str):
        raise BadRequest("thought_signature must be a string",
                         param=f"{param}.extra_content.google.thought_signature")
    return signature or None


# --- the engine's hooks (re-exported by openai_chat) -----------------------------------------------


def prepare(stores: Stores, request: CanonicalRequest, owner: str | None = None
            ) -> CanonicalRequest:
    """Put remembered signatures back on replayed tool calls that came without one."""
    memory = stores.signatures
    if memory is None:
        return request
    for msg in request.messages:
        if msg["role"] == "assistant" and any(p.get("type") == "tool_call" for p in msg["content"]):
            msg["content"] = fill_call_signatures(msg["content"], lambda call: memory.recall(owner, call["id"]))
    return request


async def fetch(stores: Stores, request: CanonicalRequest, owner: str | None = None) -> None:
    """Bring in the signatures other gateways handed out for the replayed tool calls that carry none."""
    memory = stores.signatures
    if memory is None:
        return
    unsigned: list[str] = []

    def wanted(call: dict[str, Any]) -> None:  # asked by fill_call_signatures for each call it cannot sign
        unsigned.append(call["id"])

    for msg in request.messages:
        if msg["role"] == "assistant" and any(p.get("type") == "tool_call" for p in msg["content"]):
            fill_call_signatures(msg["content"], wanted)
    if unsigned:
        await memory.fetch(owner, unsigned)


def remember_signatures(stores: Stores, calls: Iterable[tuple[str, str]], owner: str | None = None
                        ) -> Awaitable[Any] | None:
    """Keep the (tool-call id, signature) pairs just handed out to this client key (the shared
    store's write, when there is one, for the engine to await)."""
    memory = stores.signatures
    return memory.remember(owner, calls) if memory is not None else None
