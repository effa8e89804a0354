"""Canonical events → Anthropic Messages responses: the JSON message, the SSE stream, errors.

Decisions:

* Anthropic has no ``n``: events of choices other than 0 are ignored.
* A response that carries tool calls reports ``stop_reason: "tool_use"`` even when the upstream
  said plain ``stop`` (Gemini does), because agent clients only run tools on ``tool_use``.
* ``stop_sequence`` is always null: no upstream tells which sequence matched.
* Usage: ``input_tokens`` excludes cached tokens, which are reported as
  ``cache_read_input_tokens``; ``cache_creation_input_tokens`` is 0 (unknown upstream of us).
* Tool-call arguments that are not a JSON object are sent as ``{"arguments": "<raw string>"}``
  (``input`` must be an object); empty arguments become ``{}``.
* Stream: a thinking block's signature is buffered and sent as one ``signature_delta`` just
  before the block closes (the SDK keeps only the last ``signature_delta`` of a block). Argument
  deltas for a tool call whose block is already closed cannot be sent and are dropped (OpenAI-style
  upstreams stream calls one after the other, so this does not happen in practice).
"""

from __future__ import annotations

from typing import Any

import orjson

from router.canonical import (
    Event,
    Finish,
    ReasoningDelta,
    ResponseContext,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    aggregate,
)
from router.errors import GatewayError

STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

ERROR_TYPES: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "method_not_allowed": "invalid_request_error",
    "request_timeout": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "quota": "rate_limit_error",  # Anthropic's 429 has one type
    "server": "api_error",
    "bad_gateway": "api_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
    "unavailable": "overloaded_error",
}


def stop_reason(reason: str | None, has_tool_calls: bool) -> str:
    """The Anthropic stop_reason for a canonical finish reason."""
    if has_tool_calls and reason in (None, "stop"):
        return "tool_use"
    return STOP_REASONS.get(reason or "stop", "end_turn")


def usage_fields(usage: Usage | None) -> dict[str, Any]:
    """Anthropic usage: uncached input, output, cache read (and thinking tokens when known)."""
    u = usage or Usage()
    cached = max(0, min(u.cached_tokens, u.input_tokens))
    out: dict[str, Any] = {
        "input_tokens": u.input_tokens - cached,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }
    if u.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return out


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON-string arguments as the object Anthropic's ``input`` must be."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": arguments}


def error_body(err: GatewayError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for a gateway error."""
    return {"type": "error",
            "error": {"type": ERROR_TYPES.get(err.kind, "api_error"), "message": err.message}}


def encode_response(events: list[Event], ctx: ResponseContext) -> dict[str, Any]:
    """The non-stream Messages response for a complete event sequence (choice 0)."""
    agg = aggregate([ev for ev in events if getattr(ev, "choice", 0) == 0])
    choice = agg.choices[0]
    content: list[dict[str, Any]] = []
    if choice.reasoning or choice.reasoning_signature:
        content.append({"type": "thinking", "thinking": choice.reasoning,
                        "signature": choice.reasoning_signature or ""})
    if choice.text:
        content.append({"type": "text", "text": choice.text})
    content.extend({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)}
                   for call in choice.tool_calls)
    return {
        "id": ctx.id,
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": stop_reason(choice.finish_reason, bool(choice.tool_calls)),
        "stop_sequence": None,
        "usage": usage_fields(agg.usage),
    }


def frame(name: str, data: dict[str, Any]) -> bytes:
    """One SSE frame: the SDK dispatches on the ``event:`` line, so it is always present."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


class StreamEncoder:
    """Canonical events → Anthropic named-event SSE; one instance per response."""

    def __init__(self, ctx: ResponseContext):
        self._ctx = ctx
        self._index = -1  # index of the most recently opened content block
        self._open: str | None = None  # kind of the open block: text | thinking | tool_use
        self._open_tool: int | None = None  # canonical tool index of the open tool_use block
        self._signature = ""  # pending signature of the open thinking block
        self._saw_tool = False
        self._reason: str | None = None
        self._usage: Usage | None = None
        self._done = False

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self._ctx.id, "type": "message", "role": "assistant", "model": self._ctx.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": usage_fields(None),
        }
        return frame("message_start", {"message": message}) + frame("ping", {})

    def feed(self, event: Event) -> bytes:
        if self._done or getattr(event, "choice", 0) != 0:
            return b""
        if isinstance(event, TextDelta):
            return self._text(event.text)
        if isinstance(event, ReasoningDelta):
            return self._reasoning(event)
        if isinstance(event, ToolCallStart):
            return self._tool_start(event)
        if isinstance(event, ToolCallDelta):
            return self._tool_delta(event)
        if isinstance(event, Finish):
            self._reason = event.reason
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, StreamError):
            return self.error(event)
        return b""

    def finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        usage = usage_fields(self._usage)
        delta = {"stop_reason": stop_reason(self._reason, self._saw_tool), "stop_sequence": None}
        return (self._close() + frame("message_delta", {"delta": delta, "usage": usage})
                + frame("message_stop", {}))

    def error(self, err: StreamError) -> bytes:
        if self._done:
            return b""
        self._done = True
        kind = ERROR_TYPES.get(err.kind, "api_error")
        return frame("error", {"error": {"type": kind, "message": err.message}})

    # --- blocks -------------------------------------------------------------------------------

    def _text(self, text: str) -> bytes:
        if not text:
            return b""
        out = b"" if self._open == "text" else self._begin("text", {"type": "text", "text": ""})
        return out + self._delta({"type": "text_delta", "text": text})

    def _reasoning(self, event: ReasoningDelta) -> bytes:
        if not event.text and not event.signature:
            return b""
        out = b""
        if self._open != "thinking":
            out = self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        if event.signature:
            self._signature += event.signature
        if event.text:
            out += self._delta({"type": "thinking_delta", "thinking": event.text})
        return out

    def _tool_start(self, event: ToolCallStart) -> bytes:
        self._saw_tool = True
        block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
        out = self._begin("tool_use", block)
        self._open_tool = event.index
        return out

    def _tool_delta(self, event: ToolCallDelta) -> bytes:
        if self._open != "tool_use" or self._open_tool != event.index or not event.arguments:
            return b""
        return self._delta({"type": "input_json_delta", "partial_json": event.arguments})

    def _begin(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        return out + frame("content_block_start", {"index": self._index, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return frame("content_block_delta", {"index": self._index, "delta": delta})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._open == "thinking" and self._signature:
            out = self._delta({"type": "signature_delta", "signature": self._signature})
        self._open, self._open_tool, self._signature = None, None, ""
        return out + frame("content_block_stop", {"index": self._index})
