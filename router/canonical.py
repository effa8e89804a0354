"""The canonical request and response events: the one contract between codecs.

Every client codec decodes its request body into a :class:`CanonicalRequest`; every upstream
codec decodes its response (JSON or SSE stream) into a sequence of :data:`Event` objects; every
client codec encodes those events back into its own wire format. N + M codecs, not N x M.

Canonical messages are OpenAI-chat-shaped dicts with the system prompt removed and content always a
list of typed parts::

    {"role": "user" | "assistant" | "tool", "content": [part, ...]}

Parts:
    {"type": "text", "text": str}
    {"type": "image", "url": str | None, "media_type": str | None, "data": str | None}
        (either ``url`` for http(s) images or ``data`` = base64 + ``media_type``)
    {"type": "tool_call", "id": str, "name": str, "arguments": str}     (assistant; JSON string)
    {"type": "tool_result", "tool_call_id": str, "name": str | None,
     "content": str, "is_error": bool}                                   (role "tool")
    {"type": "thinking", "text": str, "signature": str | None, "redacted"?: bool}   (assistant;
        ``redacted`` marks an opaque Anthropic ``redacted_thinking`` payload kept in ``signature``)

Tools: ``[{"name": str, "description": str | None, "parameters": dict | None}]``.
Tool choice: ``"auto" | "none" | "required"`` or ``{"name": str}`` (a named function).
Response format: ``{"type": "text" | "json_object" | "json_schema", "schema": dict | None,
"name": str | None, "strict": bool | None}``.
Reasoning: ``{"effort": str | None, "budget": int | None}``.

Usage semantics: ``input_tokens`` counts every prompt token (cached ones included, ``cached_tokens``
is the cached subset); ``output_tokens`` counts every generated token (reasoning included,
``reasoning_tokens`` is that subset).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")

# Integers in client requests must stay in the interoperable JSON range (RFC 7493, I-JSON): larger
# ones would overflow when an upstream body is encoded (or summed, e.g. max_tokens + thinking budget).
JSON_INT_MAX = 2**53 - 1


def new_call_id() -> str:
    """A tool-call id for an upstream that gives none (Gemini may omit them)."""
    return "call_" + os.urandom(12).hex()


@dataclass(slots=True)
class CanonicalRequest:
    """A client request, independent of the client codec it arrived through."""

    model: str
    messages: list[dict[str, Any]]
    system: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | None = None
    n: int | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    stream: bool = False
    include_usage: bool = False
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    inbound: str = ""


def fill_call_signatures(parts: list[dict[str, Any]], signature_of: Callable[[dict[str, Any]], str | None]
                         ) -> list[dict[str, Any]]:
    """One assistant message's parts with a signature placed for each tool call that has none yet.

    A call has one when a signed thinking part comes before it that no earlier call claimed (the
    convention the Gemini decoder and filter share). For the others ``signature_of(call)`` is
    asked; a known signature goes on the message's opening unsigned thinking part for its first
    call (the reasoning that led to the calls), else on an empty thinking part just before the call.
    """
    out: list[dict[str, Any]] = []
    claimed_by_next = False
    first = True
    for part in parts:
        kind = part.get("type")
        if kind == "thinking" and part.get("signature"):
            claimed_by_next = True
        elif kind == "tool_call":
            signature = None if claimed_by_next else signature_of(part)
            if signature:
                opening = out[0] if first and out and out[0].get("type") == "thinking" else None
                if opening is not None and not opening.get("signature"):
                    out[0] = {**opening, "signature": signature}
                else:
                    out.append({"type": "thinking", "text": "", "signature": signature})
            claimed_by_next, first = False, False
        out.append(part)
    return out


# --- response events -------------------------------------------------------------------------
# ``choice`` is the candidate index (n > 1); ``index`` on tool-call events numbers the tool calls
# of one choice sequentially from 0.


@dataclass(slots=True)
class TextDelta:
    text: str
    choice: int = 0


@dataclass(slots=True)
class ReasoningDelta:
    text: str
    signature: str | None = None
    choice: int = 0


@dataclass(slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str
    choice: int = 0


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    arguments: str
    choice: int = 0


@dataclass(slots=True)
class Finish:
    reason: str  # one of FINISH_REASONS
    choice: int = 0


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # the model the answer names (its upstream's own name for it, e.g. a dated version), when the
    # upstream codec read one; "" otherwise. Not part of the counts: equal usages may name others
    model: str = field(default="", compare=False)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class StreamError:
    """An upstream failure after the response started (reset, malformed chunk, idle timeout)."""

    status: int
    kind: str  # an ErrorKind name, see router.errors
    message: str


Event: TypeAlias = TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta | Finish | Usage | StreamError


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = ""
    signature: str | None = None  # the reasoning signature sent just before the call (Gemini's)


@dataclass(slots=True)
class Choice:
    """One aggregated candidate of a non-stream response."""

    index: int = 0
    text: str = ""
    reasoning: str = ""
    reasoning_signature: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass(slots=True)
class Aggregate:
    choices: list[Choice]
    usage: Usage | None = None
    error: StreamError | None = None


def aggregate(events: list[Event]) -> Aggregate:
    """Fold a complete event sequence into per-choice results (used by every non-stream encoder)."""
    choices: dict[int, Choice] = {}
    usage: Usage | None = None
    error: StreamError | None = None
    unclaimed: dict[int, str] = {}  # choice -> signature not yet followed by a tool call

    def get(i: int) -> Choice:
        c = choices.get(i)
        if c is None:
            c = choices[i] = Choice(index=i)
        return c

    for ev in events:  # the common kinds first: text, finish, usage
        if isinstance(ev, TextDelta):
            get(ev.choice).text += ev.text
        elif isinstance(ev, Finish):
            get(ev.choice).finish_reason = ev.reason
        elif isinstance(ev, Usage):
            usage = ev
        elif isinstance(ev, ReasoningDelta):
            c = get(ev.choice)
            c.reasoning += ev.text
            if ev.signature:
                c.reasoning_signature = (c.reasoning_signature or "") + ev.signature
                unclaimed[ev.choice] = unclaimed.get(ev.choice, "") + ev.signature
        elif isinstance(ev, ToolCallStart):
            get(ev.choice).tool_calls.append(ToolCall(ev.id, ev.name, signature=unclaimed.pop(ev.choice, None)))
        elif isinstance(ev, ToolCallDelta):
            calls = get(ev.choice).tool_calls
            if 0 <= ev.index < len(calls):
                calls[ev.index].arguments += ev.arguments
        elif isinstance(ev, StreamError):
            error = ev
    if not choices:
        choices[0] = Choice(index=0)
    for c in choices.values():
        if c.finish_reason is None:
            c.finish_reason = "tool_calls" if c.tool_calls else "stop"
    return Aggregate(choices=[choices[i] for i in sorted(choices)], usage=usage, error=error)


@dataclass(slots=True)
class ResponseContext:
    """What an encoder needs besides the events: ids and the client-facing model name."""

    id: str  # e.g. "chatcmpl-<hex>", generated once per request by the engine
    model: str  # the model name the client asked for
    created: int  # unix seconds
    request: CanonicalRequest
    # (tool-call id, signature) of the calls an encoder handed out with their signature, for a
    # codec whose clients may drop it on replay (``remember_signatures``); None when there were none
    signed_calls: list[tuple[str, str]] | None = None
    started: float | None = None  # time.monotonic() when the request arrived (None: unknown)
