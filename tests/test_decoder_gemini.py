"""Upstream Gemini responses → canonical events (router.upstream_codecs.gemini)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from router.canonical import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    aggregate,
)
from router.upstream_codecs.gemini import StreamDecoder, decode_response


def cand(*parts: dict[str, Any], finish: str | None = None, index: int | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}}
    if finish is not None:
        c["finishReason"] = finish
    if index is not None:
        c["index"] = index
    return c


def resp(*cands: dict[str, Any], usage: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"candidates": list(cands), **extra}
    if usage is not None:
        body["usageMetadata"] = usage
    return body


USAGE = {
    "promptTokenCount": 10,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 3,
    "cachedContentTokenCount": 4,
    "totalTokenCount": 18,
}
FC = {"functionCall": {"id": "fc-1", "name": "get", "args": {"city": "Paris"}}}

DECODE_CASES = [
    pytest.param(
        resp(cand({"text": "Hi"}, finish="STOP"), usage=USAGE),
        [TextDelta("Hi"), Finish("stop"), Usage(10, 8, 4, 3)],
        id="text-stop-usage",
    ),
    pytest.param(
        resp(cand({"text": "plan", "thought": True, "thoughtSignature": "SIG"}, {"text": "done"}, finish="STOP")),
        [ReasoningDelta("plan", signature="SIG"), TextDelta("done"), Finish("stop")],
        id="thought-with-signature",
    ),
    pytest.param(
        resp(cand({"text": "a", "thoughtSignature": "S"}, finish="STOP")),
        [ReasoningDelta("", signature="S"), TextDelta("a"), Finish("stop")],
        id="signature-on-text-part",
    ),
    pytest.param(
        resp(cand({**FC, "thoughtSignature": "S"}, finish="STOP")),
        [
            ReasoningDelta("", signature="S"),
            ToolCallStart(0, "fc-1", "get"),
            ToolCallDelta(0, '{"city":"Paris"}'),
            Finish("tool_calls"),
        ],
        id="function-call-stop-is-tool-calls",
    ),
    pytest.param(
        resp(
            cand(
                {"functionCall": {"id": "a", "name": "f"}},
                {"functionCall": {"id": "b", "name": "g", "args": {}}},
                finish="STOP",
            )
        ),
        [
            ToolCallStart(0, "a", "f"),
            ToolCallDelta(0, "{}"),
            ToolCallStart(1, "b", "g"),
            ToolCallDelta(1, "{}"),
            Finish("tool_calls"),
        ],
        id="two-calls-sequential-index",
    ),
    pytest.param(resp(cand({"text": "x"}, finish="MAX_TOKENS")), [TextDelta("x"), Finish("length")], id="max-tokens"),
    pytest.param(resp(cand(finish="SAFETY")), [Finish("content_filter")], id="safety"),
    pytest.param(resp(cand(finish="RECITATION")), [Finish("content_filter")], id="recitation"),
    pytest.param(resp(cand(finish="BLOCKLIST")), [Finish("content_filter")], id="blocklist"),
    pytest.param(resp(cand(finish="PROHIBITED_CONTENT")), [Finish("content_filter")], id="prohibited"),
    pytest.param(resp(cand(finish="SPII")), [Finish("content_filter")], id="spii"),
    pytest.param(resp(cand(finish="OTHER")), [Finish("stop")], id="other"),
    pytest.param(resp(cand(finish="LANGUAGE")), [Finish("stop")], id="language"),
    pytest.param(
        resp(cand(FC, finish="MALFORMED_FUNCTION_CALL")),
        [ToolCallStart(0, "fc-1", "get"), ToolCallDelta(0, '{"city":"Paris"}'), Finish("stop")],
        id="malformed-function-call-is-stop",
    ),
    pytest.param(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}},
        [Finish("content_filter"), Usage(7, 0, 0, 0)],
        id="blocked-prompt",
    ),
    pytest.param(
        resp(cand({"text": "a"}, finish="STOP", index=0), cand({"text": "b"}, finish="MAX_TOKENS", index=1)),
        [TextDelta("a"), Finish("stop"), TextDelta("b", choice=1), Finish("length", choice=1)],
        id="two-candidates",
    ),
    pytest.param(
        resp(cand({"text": ""}, {"inlineData": {"mimeType": "image/png", "data": "x"}})),
        [],
        id="empty-text-and-unknown-parts-ignored",
    ),
    pytest.param({"candidates": [{"finishReason": "STOP"}]}, [Finish("stop")], id="candidate-without-content"),
    pytest.param(
        {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}},
        [StreamError(429, "rate_limit", "quota")],
        id="error-object",
    ),
]


@pytest.mark.parametrize(("body", "expected"), DECODE_CASES)
def test_decode_response(body: dict[str, Any], expected: list[Event]) -> None:
    assert decode_response(body) == expected
    assert decode_response(orjson.dumps(body)) == expected
    assert decode_response(orjson.dumps(body).decode()) == expected


def test_decode_response_synthesizes_call_ids() -> None:
    events = decode_response(
        resp(cand({"functionCall": {"name": "f", "args": {"a": 1}}}, {"functionCall": {"name": "f"}}))
    )
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [s.index for s in starts] == [0, 1]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", s.id) for s in starts)
    assert starts[0].id != starts[1].id


def test_decode_response_json_array_of_chunks() -> None:
    body = [resp(cand({"text": "Hel"})), resp(cand({"text": "lo"}, finish="STOP"), usage=USAGE)]
    assert decode_response(orjson.dumps(body)) == [
        TextDelta("Hel"),
        TextDelta("lo"),
        Finish("stop"),
        Usage(10, 8, 4, 3),
    ]


MALFORMED = [
    pytest.param(b"{not json", id="invalid-json"),
    pytest.param(b"[1]", id="array-of-non-objects"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"candidates": {}}', id="candidates-not-array"),
    pytest.param(b'{"candidates": [1]}', id="candidate-not-object"),
    pytest.param(b'{"candidates": [{"content": []}]}', id="content-not-object"),
    pytest.param(b'{"candidates": [{"content": {"parts": "x"}}]}', id="parts-not-array"),
    pytest.param(b'{"candidates": [{"content": {"parts": [3]}}]}', id="part-not-object"),
    pytest.param(b'{"candidates": [{"content": {"parts": [{"text": 3}]}}]}', id="text-not-string"),
    pytest.param(b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}', id="call-without-name"),
    pytest.param(
        b'{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]}',
        id="args-not-object",
    ),
    pytest.param(b'{"candidates": [{"index": "0"}]}', id="index-not-int"),
    pytest.param(b'{"candidates": [{"finishReason": 1}]}', id="finish-not-string"),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_decode_response_malformed_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_response(body)


@pytest.mark.parametrize("body", MALFORMED)
def test_stream_malformed_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        StreamDecoder().feed(None, body)


# --- streaming ---------------------------------------------------------------------------------------


def feed_all(chunks: list[Any]) -> list[Event]:
    dec = StreamDecoder()
    out: list[Event] = []
    for chunk in chunks:
        data = chunk if isinstance(chunk, bytes) else orjson.dumps(chunk)
        out.extend(dec.feed(None, data))
    return out + dec.finish()


STREAM_CASES = [
    pytest.param(
        [
            resp(cand({"text": "Hel"}), usage={"promptTokenCount": 5, "totalTokenCount": 5}),
            resp(cand({"text": "lo"}), usage={"promptTokenCount": 5, "candidatesTokenCount": 1}),
            resp(cand({"text": ""}, finish="STOP"), usage={"promptTokenCount": 5, "candidatesTokenCount": 2}),
        ],
        [TextDelta("Hel"), TextDelta("lo"), Finish("stop"), Usage(5, 2, 0, 0)],
        id="text-usage-once-last",
    ),
    pytest.param(
        [
            resp(cand({"text": "think", "thought": True})),
            resp(cand({"functionCall": {"id": "a", "name": "f", "args": {"x": 1}}, "thoughtSignature": "S"})),
            resp(cand({"functionCall": {"id": "b", "name": "g", "args": {}}})),
            resp(cand(finish="STOP"), usage=USAGE),
        ],
        [
            ReasoningDelta("think"),
            ReasoningDelta("", signature="S"),
            ToolCallStart(0, "a", "f"),
            ToolCallDelta(0, '{"x":1}'),
            ToolCallStart(1, "b", "g"),
            ToolCallDelta(1, "{}"),
            Finish("tool_calls"),
            Usage(10, 8, 4, 3),
        ],
        id="calls-across-chunks",
    ),
    pytest.param(
        [
            resp(cand({"functionCall": {"id": "a", "name": "f"}}, index=1), cand({"text": "t"}, index=0)),
            resp(
                cand({"functionCall": {"id": "b", "name": "f"}}, finish="STOP", index=1), cand(finish="STOP", index=0)
            ),
        ],
        [
            ToolCallStart(0, "a", "f", choice=1),
            ToolCallDelta(0, "{}", choice=1),
            TextDelta("t"),
            ToolCallStart(1, "b", "f", choice=1),
            ToolCallDelta(1, "{}", choice=1),
            Finish("tool_calls", choice=1),
            Finish("stop"),
        ],
        id="per-candidate-call-index",
    ),
    pytest.param(
        [resp(cand({"text": "a"}, finish="STOP")), resp(cand(finish="MAX_TOKENS"))],
        [TextDelta("a"), Finish("stop")],
        id="finish-once-per-candidate",
    ),
    pytest.param([b"", b"  \n", b"[DONE]"], [], id="blank-and-done-ignored"),
    pytest.param(
        [
            resp(cand({"text": "a"}), usage=USAGE),
            {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},
        ],
        [TextDelta("a"), StreamError(503, "unavailable", "overloaded")],
        id="error-chunk-suppresses-usage",
    ),
    pytest.param(
        [{"error": {"message": "weird"}}],
        [StreamError(500, "server", "weird")],
        id="error-without-code",
    ),
    pytest.param(
        [{"error": "plain"}],
        [StreamError(500, "server", "plain")],
        id="error-string",
    ),
]


@pytest.mark.parametrize(("chunks", "expected"), STREAM_CASES)
def test_stream_decoder(chunks: list[Any], expected: list[Event]) -> None:
    assert feed_all(chunks) == expected


def test_stream_finish_emits_usage_only_once() -> None:
    dec = StreamDecoder()
    dec.feed(None, orjson.dumps(resp(cand({"text": "a"}, finish="STOP"), usage=USAGE)))
    assert dec.finish() == [Usage(10, 8, 4, 3)]
    assert dec.finish() == []


def test_stream_events_aggregate_like_non_stream() -> None:
    chunks = [
        resp(cand({"text": "Let me "}), usage={"promptTokenCount": 3}),
        resp(cand({"text": "check."}, {"functionCall": {"id": "x", "name": "f", "args": {"q": "a"}}})),
        resp(cand(finish="STOP"), usage=USAGE),
    ]
    merged = resp(
        cand({"text": "Let me check."}, {"functionCall": {"id": "x", "name": "f", "args": {"q": "a"}}}, finish="STOP"),
        usage=USAGE,
    )
    streamed, whole = aggregate(feed_all(chunks)), aggregate(decode_response(merged))
    assert streamed == whole
    assert streamed.choices[0].text == "Let me check."
    assert streamed.choices[0].finish_reason == "tool_calls"
    assert streamed.choices[0].tool_calls[0].arguments == '{"q":"a"}'
