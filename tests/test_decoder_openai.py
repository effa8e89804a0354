from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.canonical import (
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    aggregate,
)
from router.upstream_codecs.openai import StreamDecoder, decode_response


def completion(message: dict[str, Any], finish: Any = "stop", usage: Any = None, index: int = 0) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": index, "message": {"role": "assistant", **message}, "finish_reason": finish}],
    }
    if usage is not None:
        obj["usage"] = usage
    return obj


FULL_USAGE = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14,
              "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 2}}

RESPONSE_CASES = [
    ("text", completion({"content": "Hi"}), [TextDelta("Hi"), Finish("stop")]),
    ("usage_last", completion({"content": "Hi"}, usage=FULL_USAGE),
     [TextDelta("Hi"), Finish("stop"), Usage(9, 5, 4, 2)]),
    ("usage_null_details", completion({"content": "a"}, usage={"prompt_tokens": 1, "completion_tokens": 2,
                                                             "prompt_tokens_details": None}),
     [TextDelta("a"), Finish("stop"), Usage(1, 2, 0, 0)]),
    ("reasoning_content", completion({"content": "42", "reasoning_content": "think"}),
     [ReasoningDelta("think"), TextDelta("42"), Finish("stop")]),
    ("reasoning_alias", completion({"content": "42", "reasoning": "think"}),
     [ReasoningDelta("think"), TextDelta("42"), Finish("stop")]),
    (
        "tool_calls",
        completion({"content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
            {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": ""}},
        ]}, finish="tool_calls"),
        [ToolCallStart(0, "call_a", "f"), ToolCallDelta(0, "{\"x\":1}"), ToolCallStart(1, "call_b", "g"),
         Finish("tool_calls")],
    ),
    ("legacy_function_call_finish", completion({"content": None, "function_call": {"name": "f", "arguments": "{}"}},
                                               finish="function_call"),
     ["start:f", ToolCallDelta(0, "{}"), Finish("tool_calls")]),
    ("length", completion({"content": "a"}, finish="length"), [TextDelta("a"), Finish("length")]),
    ("content_filter", completion({"content": None}, finish="content_filter"), [Finish("content_filter")]),
    ("unknown_finish_is_stop", completion({"content": "a"}, finish="eos"), [TextDelta("a"), Finish("stop")]),
    ("null_finish", completion({"content": "a"}, finish=None), [TextDelta("a")]),
    ("refusal_as_text", completion({"content": None, "refusal": "no"}), [TextDelta("no"), Finish("stop")]),
    ("content_parts_list", completion({"content": [{"type": "thinking", "thinking": []}, {"type": "text", "text": "A"},
                                                   {"type": "text", "text": "B"}]}),
     [TextDelta("AB"), Finish("stop")]),
    ("second_choice", completion({"content": "b"}, index=1), [TextDelta("b", 1), Finish("stop", 1)]),
    ("error_body", {"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}},
     [StreamError(429, "rate_limit", "quota")]),
]


def normalize(events: list[Any]) -> list[Any]:
    """Replace synthesized tool-call ids by "start:<name>" markers."""
    out: list[Any] = []
    for e in events:
        if isinstance(e, ToolCallStart) and e.id.startswith("call_") and len(e.id) == 29:
            assert e.index == 0
            out.append(f"start:{e.name}")
        else:
            out.append(e)
    return out


@pytest.mark.parametrize("obj,expected", [c[1:] for c in RESPONSE_CASES], ids=[c[0] for c in RESPONSE_CASES])
@pytest.mark.parametrize("as_bytes", [False, True], ids=["dict", "bytes"])
def test_decode_response(obj: dict[str, Any], expected: list[Any], as_bytes: bool) -> None:
    events = decode_response(orjson.dumps(obj) if as_bytes else obj)
    assert normalize(events) == expected


MALFORMED = [
    ("not_json", b"{nope"),
    ("list", b"[]"),
    ("choices_missing", {"id": "x"}),
    ("choices_object", {"choices": {}}),
    ("choice_string", {"choices": ["x"]}),
    ("message_list", {"choices": [{"index": 0, "message": ["x"]}]}),
    ("content_number", completion({"content": 5})),
    ("tool_calls_object", completion({"tool_calls": {}})),
    ("tool_call_string", completion({"tool_calls": ["x"]})),
    ("tool_call_no_function", completion({"tool_calls": [{"id": "a"}]})),
    ("arguments_object", completion({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": {}}}]})),
    ("finish_number", completion({"content": "a"}, finish=3)),
    ("index_string", {"choices": [{"index": "0", "message": {}}]}),
]


@pytest.mark.parametrize("obj", [c[1] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_decode_response_malformed(obj: Any) -> None:
    with pytest.raises(ValueError):
        decode_response(obj)


# --- streaming ------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish}]
    return orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                         "choices": choices, **extra})


def run(payloads: list[bytes]) -> list[Any]:
    dec = StreamDecoder()
    out: list[Any] = []
    for p in payloads:
        out.extend(dec.feed(None, p))
    out.extend(dec.finish())
    return out


STREAM_CASES = [
    (
        "text_and_usage_chunk",
        [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
         chunk({}, "stop"), chunk(usage={"prompt_tokens": 3, "completion_tokens": 2}), b"[DONE]"],
        [TextDelta("Hel"), TextDelta("lo"), Finish("stop"), Usage(3, 2)],
    ),
    (
        "role_with_content_fast_path",
        [chunk({"role": "assistant", "content": "Hi"}), chunk({"content": "!", "role": "assistant"}, "stop")],
        [TextDelta("Hi"), TextDelta("!"), Finish("stop")],
    ),
    (
        "reasoning_then_text",
        [chunk({"reasoning_content": "th"}), chunk({"reasoning_content": "ink", "content": None}),
         chunk({"content": "x", "reasoning_content": None})],
        [ReasoningDelta("th"), ReasoningDelta("ink"), TextDelta("x")],
    ),
    (
        "tool_calls_by_index",
        [
            chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                   "function": {"name": "f", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
        ],
        [ToolCallStart(0, "call_a", "f"), ToolCallDelta(0, "{\"x\""), ToolCallDelta(0, ":1}"),
         ToolCallStart(1, "call_b", "g"), ToolCallDelta(1, "{}"), Finish("tool_calls")],
    ),
    (
        "tool_call_upstream_index_renumbered",
        [chunk({"tool_calls": [{"index": 3, "id": "a", "function": {"name": "f"}}]}),
         chunk({"tool_calls": [{"index": 3, "id": "a", "function": {"arguments": "{}"}}]})],
        [ToolCallStart(0, "a", "f"), ToolCallDelta(0, "{}")],
    ),
    (
        "tool_calls_without_index",
        [chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}),
         chunk({"tool_calls": [{"function": {"arguments": "}"}}]}),
         chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]})],
        [ToolCallStart(0, "a", "f"), ToolCallDelta(0, "{"), ToolCallDelta(0, "}"),
         ToolCallStart(1, "b", "g"), ToolCallDelta(1, "{}")],
    ),
    (
        "legacy_function_call",
        [chunk({"function_call": {"name": "f", "arguments": ""}}), chunk({"function_call": {"arguments": "{}"}}),
         chunk({}, "function_call")],
        ["start:f", ToolCallDelta(0, "{}"), Finish("tool_calls")],
    ),
    (
        "usage_every_chunk_last_wins",
        [chunk({"content": "a"}, usage={"prompt_tokens": 1, "completion_tokens": 1}),
         chunk({}, "stop", usage={"prompt_tokens": 1, "completion_tokens": 2,
                                  "completion_tokens_details": {"reasoning_tokens": 1}})],
        [TextDelta("a"), Finish("stop"), Usage(1, 2, 0, 1)],
    ),
    ("content_parts_delta", [chunk({"content": [{"type": "text", "text": "x"}]})], [TextDelta("x")]),
    ("finish_once", [chunk({}, "length"), chunk({}, "stop")], [Finish("length")]),
    ("two_choices", [chunk({"content": "a"}), chunk({"content": "b"}, index=1)], [TextDelta("a"), TextDelta("b", 1)]),
    ("blank_and_done", [b"", b"  ", b"[DONE]"], []),
    ("null_usage", [chunk({"content": "a"}, usage=None)], [TextDelta("a")]),
    (
        "error_chunk",
        [chunk({"content": "a"}), orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}})],
        [TextDelta("a"), StreamError(500, "server", "overloaded")],
    ),
    (
        "error_with_http_code",
        [orjson.dumps({"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}})],
        [StreamError(503, "unavailable", "down")],
    ),
    ("error_rate_limit", [orjson.dumps({"error": {"message": "slow", "code": "rate_limit_exceeded"}})],
     [StreamError(429, "rate_limit", "slow")]),
]


@pytest.mark.parametrize("payloads,expected", [c[1:] for c in STREAM_CASES], ids=[c[0] for c in STREAM_CASES])
def test_stream_decoder(payloads: list[bytes], expected: list[Any]) -> None:
    assert normalize(run(payloads)) == expected


def test_stream_aggregates_tool_arguments() -> None:
    parts = ['{"ci', 'ty": "Pa', 'ris"}']
    payloads = [chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "w", "arguments": ""}}]})]
    payloads += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in parts]
    agg = aggregate(run(payloads))
    assert [(t.id, t.name, t.arguments) for t in agg.choices[0].tool_calls] == [("c1", "w", '{"city": "Paris"}')]
    assert agg.choices[0].finish_reason == "tool_calls"


def test_stream_finish_emits_usage_once() -> None:
    dec = StreamDecoder()
    dec.feed(None, chunk(usage={"prompt_tokens": 1, "completion_tokens": 1}))
    assert dec.finish() == [Usage(1, 1)]
    assert dec.finish() == []


STREAM_MALFORMED = [
    ("not_json", b"{oops"),
    ("list", b"[1]"),
    ("choices_object", orjson.dumps({"choices": {"a": 1}})),
    ("choice_string", orjson.dumps({"choices": ["x"]})),
    ("delta_string", chunk("x")),  # type: ignore[arg-type]
    ("content_number", chunk({"content": 1, "role": "assistant", "x": 1})),
    ("tool_calls_object", chunk({"tool_calls": {"a": 1}})),
    ("tool_call_string", chunk({"tool_calls": ["x"]})),
    ("function_string", chunk({"tool_calls": [{"index": 0, "function": "f"}]})),
    ("arguments_number", chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": 1}}]})),
    ("finish_number", orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": 1}]})),
    ("index_float", orjson.dumps({"choices": [{"index": 0.5, "delta": {}}]})),
]


@pytest.mark.parametrize("payload", [c[1] for c in STREAM_MALFORMED], ids=[c[0] for c in STREAM_MALFORMED])
def test_stream_decoder_malformed(payload: bytes) -> None:
    with pytest.raises(ValueError):
        StreamDecoder().feed(None, payload)
