"""Upstream Anthropic Messages responses (JSON or named-event SSE) → canonical events.

Malformed upstream data raises ``ValueError``. Decisions:

* ``redacted_thinking`` blocks and server-tool blocks (``server_tool_use``,
  ``web_search_tool_result``...) are skipped: canonical events cannot carry them.
* Usage: ``input_tokens`` = input + cache read + cache creation, ``cached_tokens`` = cache read,
  ``reasoning_tokens`` = ``output_tokens_details.thinking_tokens`` when reported. It is emitted once,
  as the last event (JSON) or from :meth:`StreamDecoder.finish` (stream).
* Unknown stop reasons map to ``stop``; unknown stream events are ignored (forward compatible).
"""

from __future__ import annotations

from typing import Any

import orjson

from router.canonical import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from router.codecs import UpstreamCodec
from router.failures import CONTEXT_LENGTH, ErrorDetails, error_message
from router.filters.anthropic import FILTERS
from router.upstream_codecs._fields import int_field, str_field

STREAM = "anthropic stream"  # what a malformed event's error names

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> (HTTP status, canonical error kind)
ERROR_STATUSES: dict[str, tuple[int, str]] = {
    "invalid_request_error": (400, "invalid_request"),
    "authentication_error": (401, "authentication"),
    "permission_error": (403, "permission"),
    "not_found_error": (404, "not_found"),
    "request_too_large": (413, "request_too_large"),
    "rate_limit_error": (429, "rate_limit"),
    "api_error": (500, "server"),
    "timeout_error": (504, "timeout"),
    "overloaded_error": (529, "overloaded"),
}

_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_creation_input_tokens", "thinking_tokens")


def finish_reason(stop_reason: Any) -> str:
    """The canonical finish reason for an Anthropic ``stop_reason``."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stream_error(error: Any) -> StreamError:
    """A StreamError for an Anthropic ``error`` object (``{"type", "message"}``)."""
    err = error if isinstance(error, dict) else {}
    kind = err.get("type")
    status, canonical = ERROR_STATUSES.get(kind if isinstance(kind, str) else "", (500, "server"))
    message = err.get("message")
    return StreamError(status=status, kind=canonical,
                       message=message if isinstance(message, str) else "upstream error")


def decode_response(body: Any) -> list[Event]:
    """Events for a complete (non-stream) Anthropic message."""
    if not isinstance(body, dict):
        raise ValueError("anthropic response: expected a JSON object")
    if body.get("type") == "error":
        raise ValueError(f"anthropic response is an error: {body.get('error')!r}")
    content = body.get("content")
    if not isinstance(content, list):
        raise ValueError("anthropic response: 'content' must be an array")
    events: list[Event] = []
    tools = 0
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise ValueError(f"anthropic response: content[{i}] must be an object")
        block_events = _block_events(block, i, tools)
        tools += sum(isinstance(ev, ToolCallStart) for ev in block_events)
        events.extend(block_events)
    if body.get("stop_reason") is not None:
        events.append(Finish(finish_reason(body["stop_reason"])))
    usage = body.get("usage")
    if usage is not None:
        events.append(_to_usage(_merge_usage({}, usage), _model(body)))
    return events


def _model(message: dict[str, Any]) -> str:
    """The model a message names; "" when it names none."""
    model = message.get("model")
    return model if isinstance(model, str) else ""


def _block_events(block: dict[str, Any], i: int, tool_index: int) -> list[Event]:
    kind = block.get("type")
    if kind == "text":
        text = _str(block, "text", i)
        return [TextDelta(text)] if text else []
    if kind == "thinking":
        thinking = _str(block, "thinking", i)
        signature = block.get("signature")
        if not isinstance(signature, str) or not signature:
            signature = None
        return [ReasoningDelta(thinking, signature=signature)] if thinking or signature else []
    if kind == "tool_use":
        call_input = block.get("input", {})
        if not isinstance(call_input, dict):
            raise ValueError(f"anthropic response: content[{i}].input must be an object")
        return [ToolCallStart(tool_index, _str(block, "id", i), _str(block, "name", i)),
                ToolCallDelta(tool_index, orjson.dumps(call_input).decode())]
    return []


def _str(block: dict[str, Any], key: str, i: int) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise ValueError(f"anthropic response: content[{i}].{key} must be a string")
    return value


def _merge_usage(into: dict[str, int], usage: Any) -> dict[str, int]:
    """Overwrite ``into`` with the counters present in an Anthropic usage object (cumulative)."""
    if not isinstance(usage, dict):
        raise ValueError("anthropic response: 'usage' must be an object")
    details = usage.get("output_tokens_details")
    flat = dict(usage)
    if isinstance(details, dict):
        flat["thinking_tokens"] = details.get("thinking_tokens")
    for key in _USAGE_KEYS:
        value = flat.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            into[key] = value
    return into


def _to_usage(counts: dict[str, int], model: str = "") -> Usage:
    cache_read = counts.get("cache_read_input_tokens", 0)
    return Usage(model=model,
        input_tokens=(counts.get("input_tokens", 0) + cache_read
                      + counts.get("cache_creation_input_tokens", 0)),
        output_tokens=counts.get("output_tokens", 0),
        cached_tokens=cache_read,
        reasoning_tokens=counts.get("thinking_tokens", 0),
    )


class StreamDecoder:
    """Anthropic SSE events → canonical events; one instance per upstream response."""

    def __init__(self) -> None:
        self._usage: dict[str, int] = {}
        self._saw_usage = False
        self._model = ""  # message_start's
        self._tools: dict[int, int] = {}  # content block index -> canonical tool index
        self._done = False

    def feed(self, event: str | None, data: bytes) -> list[Event]:
        """Events for one SSE frame (``event`` is its ``event:`` name, if any)."""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"anthropic stream: malformed JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise ValueError("anthropic stream: event data must be a JSON object")
        name = event or payload.get("type")
        if name == "message_start":
            return self._message_start(payload)
        if name == "content_block_start":
            return self._block_start(payload)
        if name == "content_block_delta":
            return self._block_delta(payload)
        if name == "message_delta":
            return self._message_delta(payload)
        if name == "error":
            return [stream_error(payload.get("error"))]
        return []  # ping, content_block_stop, message_stop, unknown future events

    def finish(self) -> list[Event]:
        """The merged usage, once (nothing when the upstream never reported usage)."""
        if self._done or not self._saw_usage:
            return []
        self._done = True
        return [_to_usage(self._usage, self._model)]

    def _message_start(self, payload: dict[str, Any]) -> list[Event]:
        message = payload.get("message")
        if not isinstance(message, dict):
            raise ValueError("anthropic stream: message_start without a message object")
        self._take_usage(message.get("usage"))
        self._model = _model(message)
        return []

    def _block_start(self, payload: dict[str, Any]) -> list[Event]:
        index = int_field(payload, "index", STREAM)
        block = payload.get("content_block")
        if not isinstance(block, dict):
            raise ValueError("anthropic stream: content_block_start without a content_block")
        if block.get("type") == "tool_use":
            tool = self._tools[index] = len(self._tools)
            events: list[Event] = [ToolCallStart(tool, _str(block, "id", index),
                                                 _str(block, "name", index))]
            call_input = block.get("input")
            if isinstance(call_input, dict) and call_input:
                events.append(ToolCallDelta(tool, orjson.dumps(call_input).decode()))
            return events
        # text / thinking blocks may carry initial content; usually it is empty
        return [ev for ev in _block_events(block, index, 0) if not isinstance(ev, ToolCallStart)]

    def _block_delta(self, payload: dict[str, Any]) -> list[Event]:
        index = int_field(payload, "index", STREAM)
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            raise ValueError("anthropic stream: content_block_delta without a delta object")
        kind = delta.get("type")
        if kind == "text_delta":
            return [TextDelta(str_field(delta, "text", STREAM))]
        if kind == "thinking_delta":
            return [ReasoningDelta(str_field(delta, "thinking", STREAM))]
        if kind == "signature_delta":
            return [ReasoningDelta("", signature=str_field(delta, "signature", STREAM))]
        if kind == "input_json_delta":
            if index not in self._tools:
                raise ValueError(f"anthropic stream: input_json_delta for non-tool block {index}")
            return [ToolCallDelta(self._tools[index], str_field(delta, "partial_json", STREAM))]
        return []  # citations_delta and future delta types

    def _message_delta(self, payload: dict[str, Any]) -> list[Event]:
        self._take_usage(payload.get("usage"))
        delta = payload.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            return [Finish(finish_reason(delta["stop_reason"]))]
        return []

    def _take_usage(self, usage: Any) -> None:
        if usage is not None:
            _merge_usage(self._usage, usage)
            self._saw_usage = True


# --- error bodies ------------------------------------------------------------------------------------
def error_details(doc: Any) -> ErrorDetails:
    """The message of ``{"type": "error", "error": {"type", "message"}}`` (or of a bare ``{"error": "..."}``
    or ``{"message": "..."}``, which servers speaking this format may send). Anthropic's retry hint is
    its ``retry-after`` header, read for every upstream. "prompt is too long" is a context-length failure."""
    message = error_message(doc)
    too_long = message is not None and "prompt is too long" in message.lower()
    return ErrorDetails(message, reason=CONTEXT_LENGTH if too_long else None)


# --- the upstream codec (router.registry lists it) -------------------------------------------------
CODEC = UpstreamCodec("anthropic", decode_response, StreamDecoder, FILTERS, error_details=error_details)
