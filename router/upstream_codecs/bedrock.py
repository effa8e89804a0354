"""Upstream AWS Bedrock Converse answers (JSON, or ConverseStream's binary event stream) → canonical events.

Malformed upstream data raises ``ValueError``. Decisions:

* The stream is framed by :class:`router.eventstream.EventStreamFraming`: each event's name is its
  ``:event-type`` (messageStart, contentBlockStart/Delta/Stop, messageStop, metadata), an exception's
  ``exception:<type>`` (a failure mid-stream: a :class:`StreamError` with the status AWS gives the type).
* Usage, like Anthropic's: ``input_tokens`` = inputTokens + cacheReadInputTokens + cacheWriteInputTokens,
  ``cached_tokens`` = cacheReadInputTokens. The stream's comes in ``metadata``, after ``messageStop``.
* Unknown stop reasons map to ``stop``; unknown events and content blocks are skipped.
* Errors: AWS names the error type in the ``x-amzn-ErrorType`` header; the HTTP status already says
  what the gateway needs (429 throttled, 400 invalid, 403 denied, 5xx unavailable), and the body's
  ``message`` ("Input is too long for requested model.") marks a context-length failure.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.canonical import Event, Finish, ReasoningDelta, StreamError, TextDelta, ToolCallDelta, ToolCallStart, Usage
from router.codecs import UpstreamCodec
from router.eventstream import ERROR_PREFIX, EXCEPTION_PREFIX, MALFORMED, EventStreamFraming
from router.failures import CONTEXT_LENGTH, ErrorDetails, error_message
from router.filters.bedrock import FILTERS
from router.upstream_codecs._fields import int_field, str_field

STREAM = "bedrock stream"  # what a malformed event's error names

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

# exception type, lower-cased and without "exception" -> (HTTP status AWS gives it, canonical error kind)
EXCEPTIONS: dict[str, tuple[int, str]] = {
    "throttling": (429, "rate_limit"),
    "servicequotaexceeded": (429, "rate_limit"),
    "validation": (400, "invalid_request"),
    "accessdenied": (403, "permission"),
    "unrecognizedclient": (403, "permission"),
    "invalidsignature": (403, "permission"),
    "resourcenotfound": (404, "not_found"),
    "modeltimeout": (504, "timeout"),
    "modelnotready": (503, "unavailable"),
    "serviceunavailable": (503, "unavailable"),
    "internalserver": (500, "server"),
    "modelstreamerror": (500, "server"),
    "modelerror": (500, "server"),
}
_TOO_LONG = ("too long", "too many input tokens", "context length", "context window")


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stream_error(exception_type: str, payload: bytes) -> StreamError:
    """A StreamError for an exception (or error) message of the stream."""
    key = exception_type.lower().removesuffix("exception")
    status, kind = EXCEPTIONS.get(key, (500, "server"))
    try:
        doc = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        doc = None
    return StreamError(status, kind, error_message(doc) or f"upstream stream exception {exception_type[:64]}")


def decode_response(body: Any) -> list[Event]:
    """Events for a complete Converse answer."""
    if not isinstance(body, dict):
        raise ValueError("bedrock response: expected a JSON object")
    output = body.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise ValueError("bedrock response: 'output.message.content' must be an array")
    events: list[Event] = []
    tools = 0
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise ValueError(f"bedrock response: content[{i}] must be an object")
        block_events = _block_events(block, i, tools)
        tools += sum(isinstance(ev, ToolCallStart) for ev in block_events)
        events.extend(block_events)
    if body.get("stopReason") is not None:
        events.append(Finish(finish_reason(body["stopReason"])))
    if body.get("usage") is not None:
        events.append(_usage(body["usage"]))
    return events


def _block_events(block: dict[str, Any], i: int, tool_index: int) -> list[Event]:
    if "text" in block:
        text = block["text"]
        if not isinstance(text, str):
            raise ValueError(f"bedrock response: content[{i}].text must be a string")
        return [TextDelta(text)] if text else []
    if "toolUse" in block:
        use = _object(block["toolUse"], f"content[{i}].toolUse")
        call_input = use.get("input", {})
        return [ToolCallStart(tool_index, _str(use, "toolUseId", i), _str(use, "name", i)),
                ToolCallDelta(tool_index, orjson.dumps(call_input).decode())]
    if "reasoningContent" in block:
        reasoning = _object(block["reasoningContent"], f"content[{i}].reasoningContent")
        text = _object(reasoning.get("reasoningText", {}), f"content[{i}].reasoningText")
        thought, signature = text.get("text"), text.get("signature")
        thought = thought if isinstance(thought, str) else ""
        signature = signature if isinstance(signature, str) and signature else None
        return [ReasoningDelta(thought, signature=signature)] if thought or signature else []
    return []  # images, documents, guard content: nothing canonical events carry


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"bedrock: {where} must be an object")
    return value


def _str(block: dict[str, Any], key: str, i: int) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise ValueError(f"bedrock: content[{i}].{key} must be a string")
    return value


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(usage: Any) -> Usage:
    u = _object(usage, "usage")
    cache_read = _count(u, "cacheReadInputTokens")
    return Usage(input_tokens=_count(u, "inputTokens") + cache_read + _count(u, "cacheWriteInputTokens"),
                 output_tokens=_count(u, "outputTokens"), cached_tokens=cache_read)


class StreamDecoder:
    """ConverseStream events → canonical events; one instance per upstream response."""

    def __init__(self) -> None:
        self._tools: dict[int, int] = {}  # content block index -> canonical tool index
        self._usage: Usage | None = None
        self._done = False

    def feed(self, event: str | None, data: bytes) -> list[Event]:
        if event is not None and event.startswith((EXCEPTION_PREFIX, ERROR_PREFIX)):
            return [stream_error(event.partition(":")[2], data)]
        if event == MALFORMED:
            raise ValueError(data.decode(errors="replace"))
        if event not in ("contentBlockStart", "contentBlockDelta", "messageStop", "metadata"):
            return []  # messageStart, contentBlockStop, unknown future events
        try:
            payload = _object(orjson.loads(data), f"{event} event")
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"bedrock stream: malformed JSON: {exc}") from exc
        if event == "contentBlockStart":
            return self._block_start(payload)
        if event == "contentBlockDelta":
            return self._block_delta(payload)
        if event == "messageStop":
            return [Finish(finish_reason(payload.get("stopReason")))]
        if payload.get("usage") is not None:
            self._usage = _usage(payload["usage"])
        return []

    def finish(self) -> list[Event]:
        """The usage ``metadata`` reported, once."""
        if self._done or self._usage is None:
            return []
        self._done = True
        return [self._usage]

    def _block_start(self, payload: dict[str, Any]) -> list[Event]:
        index = int_field(payload, "contentBlockIndex", STREAM)
        start = payload.get("start")
        use = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(use, dict):
            return []
        tool = self._tools[index] = len(self._tools)
        return [ToolCallStart(tool, _str(use, "toolUseId", index), _str(use, "name", index))]

    def _block_delta(self, payload: dict[str, Any]) -> list[Event]:
        index = int_field(payload, "contentBlockIndex", STREAM)
        delta = _object(payload.get("delta"), "contentBlockDelta.delta")
        if "text" in delta:
            return [TextDelta(str_field(delta, "text", STREAM))]
        if "toolUse" in delta:
            if index not in self._tools:
                raise ValueError(f"bedrock stream: toolUse delta for non-tool block {index}")
            return [ToolCallDelta(self._tools[index], str_field(_object(delta["toolUse"], "toolUse"), "input", STREAM))]
        if "reasoningContent" in delta:
            reasoning = _object(delta["reasoningContent"], "reasoningContent")
            if isinstance(reasoning.get("signature"), str):
                return [ReasoningDelta("", signature=reasoning["signature"])]
            text = reasoning.get("text")
            return [ReasoningDelta(text)] if isinstance(text, str) else []
        return []


def error_details(doc: Any) -> ErrorDetails:
    """The ``message`` (or ``Message``) of a Bedrock error body; a too-long input is a context-length failure."""
    message = error_message(doc)
    if message is None and isinstance(doc, dict) and isinstance(doc.get("Message"), str) and doc["Message"]:
        message = doc["Message"]
    lowered = message.lower() if message else ""
    return ErrorDetails(message, reason=CONTEXT_LENGTH if any(s in lowered for s in _TOO_LONG) else None)


# --- the upstream codec (router.registry lists it) -------------------------------------------------
CODEC = UpstreamCodec("bedrock", decode_response, StreamDecoder, FILTERS, error_details=error_details,
                      framing=EventStreamFraming)
