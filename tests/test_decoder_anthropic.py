"""Upstream Anthropic responses (JSON and SSE) → canonical events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.canonical import (
    CanonicalRequest,
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
from router.client_codecs import anthropic_messages as am
from router.upstream_codecs import anthropic as dec


def message(content: list[Any], stop: Any = "end_turn", **usage: Any) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage}}


# --- decode_response ---------------------------------------------------------------------------

RESPONSE_CASES = [
    ("text", message([{"type": "text", "text": "Hi"}]),
     [TextDelta("Hi"), Finish("stop"), Usage(10, 5)]),
    ("two-text-blocks", message([{"type": "text", "text": "a", "citations": []},
                                 {"type": "text", "text": "b"}]),
     [TextDelta("a"), TextDelta("b"), Finish("stop"), Usage(10, 5)]),
    ("empty-text-skipped", message([{"type": "text", "text": ""}]), [Finish("stop"), Usage(10, 5)]),
    ("thinking", message([{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                          {"type": "text", "text": "ok"}]),
     [ReasoningDelta("hmm", signature="sig"), TextDelta("ok"), Finish("stop"), Usage(10, 5)]),
    ("thinking-signature-only", message([{"type": "thinking", "thinking": "", "signature": "s"}]),
     [ReasoningDelta("", signature="s"), Finish("stop"), Usage(10, 5)]),
    ("thinking-empty", message([{"type": "thinking", "thinking": "", "signature": ""}]),
     [Finish("stop"), Usage(10, 5)]),
    ("redacted-and-server-blocks-skipped", message([
        {"type": "redacted_thinking", "data": "x"},
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
        {"type": "web_search_tool_result", "tool_use_id": "s", "content": []},
        {"type": "text", "text": "t"}]),
     [TextDelta("t"), Finish("stop"), Usage(10, 5)]),
    ("tool-use", message([{"type": "text", "text": "let me"},
                          {"type": "tool_use", "id": "tu_1", "name": "f", "input": {"a": [1]}},
                          {"type": "tool_use", "id": "tu_2", "name": "g", "input": {}}],
                         stop="tool_use"),
     [TextDelta("let me"), ToolCallStart(0, "tu_1", "f"), ToolCallDelta(0, '{"a":[1]}'),
      ToolCallStart(1, "tu_2", "g"), ToolCallDelta(1, "{}"), Finish("tool_calls"),
      Usage(10, 5)]),
    ("cache-usage", message([], cache_read_input_tokens=100, cache_creation_input_tokens=7),
     [Finish("stop"), Usage(input_tokens=117, output_tokens=5, cached_tokens=100)]),
    ("thinking-tokens", message([], output_tokens_details={"thinking_tokens": 3}),
     [Finish("stop"), Usage(10, 5, reasoning_tokens=3)]),
    ("no-stop-no-usage", {"content": [{"type": "text", "text": "x"}], "stop_reason": None},
     [TextDelta("x")]),
]


@pytest.mark.parametrize("body,events", [c[1:] for c in RESPONSE_CASES],
                         ids=[c[0] for c in RESPONSE_CASES])
def test_decode_response(body: dict[str, Any], events: list[Any]) -> None:
    assert dec.decode_response(body) == events


STOP_CASES = [("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
              ("max_tokens", "length"), ("model_context_window_exceeded", "length"),
              ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("brand_new", "stop"),
              (7, "stop")]


@pytest.mark.parametrize("stop,reason", STOP_CASES, ids=[str(c[0]) for c in STOP_CASES])
def test_stop_reasons(stop: Any, reason: str) -> None:
    assert dec.finish_reason(stop) == reason
    events = dec.decode_response(message([], stop=stop))
    assert Finish(reason) in events


MALFORMED_RESPONSES = [
    ("list", []),
    ("string", "oops"),
    ("null", None),
    ("error-body", {"type": "error", "error": {"type": "api_error", "message": "x"}}),
    ("no-content", {"type": "message"}),
    ("content-string", {"content": "hi"}),
    ("block-string", {"content": ["hi"]}),
    ("text-int", {"content": [{"type": "text", "text": 3}]}),
    ("tool-no-id", {"content": [{"type": "tool_use", "name": "f", "input": {}}]}),
    ("tool-input-list", {"content": [{"type": "tool_use", "id": "i", "name": "f", "input": []}]}),
    ("thinking-null", {"content": [{"type": "thinking", "thinking": None}]}),
    ("usage-list", {"content": [], "usage": []}),
]


@pytest.mark.parametrize("body", [c[1] for c in MALFORMED_RESPONSES],
                         ids=[c[0] for c in MALFORMED_RESPONSES])
def test_decode_response_malformed(body: Any) -> None:
    with pytest.raises(ValueError, match="anthropic"):
        dec.decode_response(body)


# --- StreamDecoder -----------------------------------------------------------------------------

def sse(name: str, **data: Any) -> tuple[str, bytes]:
    return name, orjson.dumps({"type": name, **data})


REAL_STREAM = [
    sse("message_start", message={"id": "msg_1", "type": "message", "role": "assistant",
                                  "content": [], "model": "claude", "stop_reason": None,
                                  "stop_sequence": None,
                                  "usage": {"input_tokens": 25, "output_tokens": 1,
                                            "cache_read_input_tokens": 5,
                                            "cache_creation_input_tokens": 2}}),
    sse("content_block_start", index=0,
        content_block={"type": "thinking", "thinking": "", "signature": ""}),
    sse("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "plan"}),
    sse("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "SIG"}),
    sse("content_block_stop", index=0),
    sse("ping"),
    sse("content_block_start", index=1, content_block={"type": "text", "text": ""}),
    sse("content_block_delta", index=1, delta={"type": "text_delta", "text": "Hello"}),
    sse("content_block_delta", index=1, delta={"type": "citations_delta", "citation": {}}),
    sse("content_block_stop", index=1),
    sse("content_block_start", index=2,
        content_block={"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
    sse("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": ""}),
    sse("content_block_delta", index=2,
        delta={"type": "input_json_delta", "partial_json": '{"city": "Pa'}),
    sse("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": 'ris"}'}),
    sse("content_block_stop", index=2),
    sse("content_block_start", index=3,
        content_block={"type": "tool_use", "id": "toolu_2", "name": "now", "input": {"tz": "UTC"}}),
    sse("content_block_stop", index=3),
    sse("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None},
        usage={"output_tokens": 89}),
    sse("message_stop"),
    sse("some_future_event", anything=1),
]

REAL_STREAM_EVENTS = [
    ReasoningDelta("plan"), ReasoningDelta("", signature="SIG"), TextDelta("Hello"),
    ToolCallStart(0, "toolu_1", "get_weather"), ToolCallDelta(0, ""),
    ToolCallDelta(0, '{"city": "Pa'), ToolCallDelta(0, 'ris"}'),
    ToolCallStart(1, "toolu_2", "now"), ToolCallDelta(1, '{"tz":"UTC"}'),
    Finish("tool_calls"),
]


@pytest.mark.parametrize("named", [True, False], ids=["event-names", "type-only"])
def test_stream_decoder(named: bool) -> None:
    decoder = dec.StreamDecoder()
    events: list[Any] = []
    for name, data in REAL_STREAM:
        events.extend(decoder.feed(name if named else None, data))
    assert events == REAL_STREAM_EVENTS
    assert decoder.finish() == [Usage(input_tokens=32, output_tokens=89, cached_tokens=5)]
    assert decoder.finish() == []


USAGE_CASES = [
    ("start-only", [sse("message_start", message={"usage": {"input_tokens": 3,
                                                              "output_tokens": 1}})],
     [Usage(3, 1)]),
    ("delta-overrides", [
        sse("message_start", message={"usage": {"input_tokens": 3, "output_tokens": 1}}),
        sse("message_delta", delta={"stop_reason": None},
            usage={"output_tokens": 9, "input_tokens": 4, "cache_read_input_tokens": 2,
                   "output_tokens_details": {"thinking_tokens": 6}})],
     [Usage(6, 9, cached_tokens=2, reasoning_tokens=6)]),
    ("none", [sse("ping")], []),
    ("null-usage", [sse("message_start", message={"usage": None})], []),
]


@pytest.mark.parametrize("frames,usage", [c[1:] for c in USAGE_CASES], ids=[c[0] for c in USAGE_CASES])
def test_stream_usage(frames: list[tuple[str, bytes]], usage: list[Any]) -> None:
    decoder = dec.StreamDecoder()
    for name, data in frames:
        assert decoder.feed(name, data) == []
    assert decoder.finish() == usage


ERROR_CASES = [
    ("overloaded_error", 529, "overloaded"), ("rate_limit_error", 429, "rate_limit"),
    ("api_error", 500, "server"), ("invalid_request_error", 400, "invalid_request"),
    ("authentication_error", 401, "authentication"), ("permission_error", 403, "permission"),
    ("not_found_error", 404, "not_found"), ("request_too_large", 413, "request_too_large"),
    ("timeout_error", 504, "timeout"), ("mystery_error", 500, "server"),
]


@pytest.mark.parametrize("kind,status,canonical", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_stream_error(kind: str, status: int, canonical: str) -> None:
    name, data = sse("error", error={"type": kind, "message": "Overloaded"})
    assert dec.StreamDecoder().feed(name, data) == [StreamError(status, canonical, "Overloaded")]


def test_stream_error_without_details() -> None:
    assert dec.StreamDecoder().feed("error", b'{"type":"error"}') == [
        StreamError(500, "server", "upstream error")]


MALFORMED_FRAMES = [
    ("not-json", "message_start", b"{oops"),
    ("json-list", None, b"[1]"),
    ("start-no-message", "message_start", b'{"type":"message_start"}'),
    ("start-usage-list", "message_start", b'{"message":{"usage":[]}}'),
    ("block-no-index", "content_block_start", b'{"content_block":{"type":"text","text":""}}'),
    ("block-bool-index", "content_block_delta",
     b'{"index":true,"delta":{"type":"text_delta","text":"x"}}'),
    ("block-missing", "content_block_start", b'{"index":0}'),
    ("tool-no-name", "content_block_start",
     b'{"index":0,"content_block":{"type":"tool_use","id":"x"}}'),
    ("delta-missing", "content_block_delta", b'{"index":0}'),
    ("text-delta-int", "content_block_delta", b'{"index":0,"delta":{"type":"text_delta","text":1}}'),
    ("json-delta-non-tool", "content_block_delta",
     b'{"index":5,"delta":{"type":"input_json_delta","partial_json":"{}"}}'),
]


@pytest.mark.parametrize("name,data", [c[1:] for c in MALFORMED_FRAMES],
                         ids=[c[0] for c in MALFORMED_FRAMES])
def test_stream_malformed(name: str | None, data: bytes) -> None:
    with pytest.raises(ValueError, match="anthropic"):
        dec.StreamDecoder().feed(name, data)


# --- round trip through the dialect encoder ----------------------------------------------------

def test_encoder_stream_decodes_back() -> None:
    """Frames our StreamEncoder writes decode to the same aggregate (Anthropic → Anthropic)."""
    sent = [ReasoningDelta("think"), ReasoningDelta("", signature="S"), TextDelta("a"),
            TextDelta("b"), ToolCallStart(0, "t1", "f"), ToolCallDelta(0, '{"x":'),
            ToolCallDelta(0, "2}"), Finish("tool_calls"),
            Usage(input_tokens=30, output_tokens=7, cached_tokens=4)]
    ctx = ResponseContext(id="msg_r", model="m", created=0,
                          request=CanonicalRequest(model="m", messages=[]))
    enc = am.StreamEncoder(ctx)
    raw = enc.start() + b"".join(enc.feed(ev) for ev in sent) + enc.finish()
    decoder = dec.StreamDecoder()
    got: list[Any] = []
    for chunk in raw.decode().split("\n\n")[:-1]:
        event_line, data_line = chunk.split("\n")
        got.extend(decoder.feed(event_line[len("event: "):], data_line[len("data: "):].encode()))
    got.extend(decoder.finish())
    assert aggregate(got) == aggregate(sent)


def test_encoder_json_decodes_back() -> None:
    sent = [ReasoningDelta("r", signature="S"), TextDelta("hi"), ToolCallStart(0, "t", "f"),
            ToolCallDelta(0, '{"k":"v"}'), Finish("tool_calls"), Usage(9, 3, cached_tokens=2)]
    ctx = ResponseContext(id="msg_r", model="m", created=0,
                          request=CanonicalRequest(model="m", messages=[]))
    assert aggregate(dec.decode_response(am.encode_response(sent, ctx))) == aggregate(sent)
