"""The Anthropic Messages inbound dialect: request decoding, response/stream encoding, helpers."""

from __future__ import annotations

import copy
from typing import Any

import anthropic

try:  # recent SDK releases are built on the httpx2 fork, older ones on httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx  # type: ignore[no-redef]
import orjson
import pytest
from anthropic.types import Message, ModelInfo

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
)
from router.client_codecs import anthropic_messages as am
from router.errors import BadRequest, GatewayError
from router.token_estimate import estimate_tokens

BASE: dict[str, Any] = {"model": "claude-x", "max_tokens": 100,
                        "messages": [{"role": "user", "content": "hi"}]}


def body(**overrides: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out.update(overrides)
    return out


def ctx(model: str = "claude-x") -> ResponseContext:
    return ResponseContext(id="msg_test", model=model, created=0,
                           request=CanonicalRequest(model=model, messages=[]))


def parse_frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    frames = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk:
            continue
        event_line, data_line = chunk.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = event_line[7:], orjson.loads(data_line[6:])
        assert data["type"] == name
        frames.append((name, data))
    return frames


# --- decode_request: good input ----------------------------------------------------------------

TOOL_TURNS = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "checking"},
        {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "tu_2", "name": "get_time", "input": {}}]},
    {"role": "user", "content": [
        {"type": "text", "text": "also this"},
        {"type": "tool_result", "tool_use_id": "tu_1", "content": "21C"},
        {"type": "tool_result", "tool_use_id": "tu_2", "is_error": True,
         "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"type": "tool_result", "tool_use_id": "tu_unknown"}]},
]

DECODE_CASES = [
    ("minimal", {}, {"model": "claude-x", "max_tokens": 100, "stream": False, "system": None,
                     "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                     "inbound": "anthropic.messages", "include_usage": True}),
    ("system-string", {"system": "be brief"}, {"system": "be brief"}),
    ("system-empty", {"system": ""}, {"system": None}),
    ("system-blocks", {"system": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                                  {"type": "text", "text": "b"}]}, {"system": "a\n\nb"}),
    ("sampling", {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"]},
     {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop": ["END"]}),
    ("empty-stop", {"stop_sequences": []}, {"stop": None}),
    ("stream", {"stream": True}, {"stream": True}),
    ("metadata-user", {"metadata": {"user_id": "u-1"}}, {"user": "u-1", "metadata": None}),
    ("metadata-no-user", {"metadata": {}}, {"user": None}),
    ("thinking-enabled", {"thinking": {"type": "enabled", "budget_tokens": 2048}},
     {"reasoning": {"effort": None, "budget": 2048}}),
    ("thinking-disabled", {"thinking": {"type": "disabled"}}, {"reasoning": None}),
    ("thinking-adaptive", {"thinking": {"type": "adaptive"}},
     {"reasoning": {"effort": "medium", "budget": None}}),
    ("adaptive-effort", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}},
     {"reasoning": {"effort": "high", "budget": None}}),
    ("effort-only", {"output_config": {"effort": "low"}},
     {"reasoning": {"effort": "low", "budget": None}}),
    ("json-schema", {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
     {"response_format": {"type": "json_schema", "schema": {"type": "object"}, "name": None,
                          "strict": None}}),
    ("tools", {"tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}},
                         {"name": "g", "input_schema": {}, "type": "custom"},
                         {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]},
     {"tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}},
                {"name": "g", "description": None, "parameters": {}}]}),
    ("server-tools-only", {"tools": [{"type": "bash_20250124", "name": "bash"}]}, {"tools": None}),
    ("tool-choice-auto", {"tool_choice": {"type": "auto"}},
     {"tool_choice": "auto", "parallel_tool_calls": None}),
    ("tool-choice-any", {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
     {"tool_choice": "required", "parallel_tool_calls": False}),
    ("tool-choice-none", {"tool_choice": {"type": "none"}}, {"tool_choice": "none"}),
    ("tool-choice-tool", {"tool_choice": {"type": "tool", "name": "f",
                                          "disable_parallel_tool_use": False}},
     {"tool_choice": {"name": "f"}, "parallel_tool_calls": None}),
    ("text-blocks", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "b"}]}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "text", "text": "b"}]}]}),
    ("images", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]},
     {"messages": [{"role": "user", "content": [
         {"type": "image", "url": None, "media_type": "image/png", "data": "QUJD"},
         {"type": "image", "url": "https://x/y.png", "media_type": None, "data": None}]}]}),
    ("documents", {"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
        {"type": "document", "source": {"type": "content", "content": [
            {"type": "text", "text": "p1"}, {"type": "text", "text": "p2"}]}},
        {"type": "document", "source": {"type": "content", "content": "whole"}}]}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "doc"},
                                                {"type": "text", "text": "p1\np2"},
                                                {"type": "text", "text": "whole"}]}]}),
    ("tool-turns", {"messages": TOOL_TURNS}, {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "checking"},
            {"type": "tool_call", "id": "tu_1", "name": "get_weather",
             "arguments": '{"city":"Paris"}'},
            {"type": "tool_call", "id": "tu_2", "name": "get_time", "arguments": "{}"}]},
        {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "tu_1",
                                      "name": "get_weather", "content": "21C", "is_error": False}]},
        {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "tu_2",
                                      "name": "get_time", "content": "a\nb", "is_error": True}]},
        {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "tu_unknown",
                                      "name": None, "content": "", "is_error": False}]},
        {"role": "user", "content": [{"type": "text", "text": "also this"}]}]}),
    ("tool-result-image", {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "see"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                         "data": "Zm9v"}}]}]}]},
     {"messages": [
         {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "t", "name": None,
                                       "content": "see", "is_error": False}]},
         {"role": "user", "content": [{"type": "image", "url": None, "media_type": "image/jpeg",
                                       "data": "Zm9v"}]}]}),
    ("thinking-parts", {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "s", "content": []},
            {"type": "text", "text": "a"}]}]},
     {"messages": [
         {"role": "user", "content": [{"type": "text", "text": "q"}]},
         {"role": "assistant", "content": [
             {"type": "thinking", "text": "hmm", "signature": "sig"},
             {"type": "thinking", "text": "", "signature": "opaque", "redacted": True},
             {"type": "text", "text": "a"}]}]}),
    ("prefill-empty-last-assistant", {"messages": [{"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": []}]},
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                   {"role": "assistant", "content": []}]}),
    ("null-optionals", {"system": None, "temperature": None, "tools": None, "tool_choice": None,
                        "thinking": None, "metadata": None, "stream": None},
     {"system": None, "temperature": None, "tools": None, "stream": False}),
]


@pytest.mark.parametrize("overrides,expected", [c[1:] for c in DECODE_CASES],
                         ids=[c[0] for c in DECODE_CASES])
def test_decode_request(overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    src = body(**overrides)
    req = am.decode_request(src, {})
    for name, value in expected.items():
        assert getattr(req, name) == value, name
    assert req.raw is src


# --- decode_request: bad input -----------------------------------------------------------------

def _msg(content: Any, role: str = "user") -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content}]}


BAD_CASES = [
    ("body-list", [], None),
    ("body-string", "hello", None),
    ("body-null", None, None),
    ("model-missing", {"max_tokens": 1, "messages": []}, "model"),
    ("model-int", body(model=3), "model"),
    ("model-empty", body(model=""), "model"),
    ("max-tokens-missing", {"model": "m", "messages": BASE["messages"]}, "max_tokens"),
    ("max-tokens-string", body(max_tokens="10"), "max_tokens"),
    ("max-tokens-bool", body(max_tokens=True), "max_tokens"),
    ("max-tokens-zero", body(max_tokens=0), "max_tokens"),
    ("max-tokens-null", body(max_tokens=None), "max_tokens"),
    ("messages-missing", {"model": "m", "max_tokens": 1}, "messages"),
    ("messages-object", body(messages={}), "messages"),
    ("messages-empty", body(messages=[]), "messages"),
    ("message-string", body(messages=["hi"]), "messages.0"),
    ("role-missing", body(messages=[{"content": "x"}]), "messages.0.role"),
    ("role-system", body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
    ("content-missing", body(messages=[{"role": "user"}]), "messages.0.content"),
    ("content-int", body(**_msg(5)), "messages.0.content"),
    ("content-empty-user", body(**_msg([])), "messages.0.content"),
    ("block-string", body(**_msg(["x"])), "messages.0.content.0"),
    ("block-no-type", body(**_msg([{"text": "x"}])), "messages.0.content.0.type"),
    ("text-int", body(**_msg([{"type": "text", "text": 1}])), "messages.0.content.0.text"),
    ("block-unknown", body(**_msg([{"type": "video"}])), "messages.0.content.0.type"),
    ("tool-use-in-user", body(**_msg([{"type": "tool_use", "id": "a", "name": "f", "input": {}}])),
     "messages.0.content.0.type"),
    ("tool-result-in-assistant",
     body(**_msg([{"type": "tool_result", "tool_use_id": "a"}], role="assistant")),
     "messages.0.content.0.type"),
    ("image-in-assistant", body(**_msg([{"type": "image", "source": {"type": "url", "url": "u"}}],
                                       role="assistant")), "messages.0.content.0.type"),
    ("image-no-source", body(**_msg([{"type": "image"}])), "messages.0.content.0.source"),
    ("image-source-file", body(**_msg([{"type": "image", "source": {"type": "file",
                                                                    "file_id": "f"}}])),
     "messages.0.content.0.source.type"),
    ("image-no-data", body(**_msg([{"type": "image", "source": {"type": "base64",
                                                                "media_type": "image/png"}}])),
     "messages.0.content.0.source.data"),
    ("document-pdf", body(**_msg([{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "x"}}])),
     "messages.0.content.0.source.type"),
    ("document-content-image", body(**_msg([{"type": "document", "source": {
        "type": "content", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]}}])),
     "messages.0.content.0.source.content"),
    ("tool-use-input-list", body(**_msg([{"type": "tool_use", "id": "a", "name": "f", "input": []}],
                                        role="assistant")), "messages.0.content.0.input"),
    ("tool-use-no-input", body(**_msg([{"type": "tool_use", "id": "a", "name": "f"}],
                                      role="assistant")), "messages.0.content.0.input"),
    ("tool-use-id-int", body(**_msg([{"type": "tool_use", "id": 1, "name": "f", "input": {}}],
                                    role="assistant")), "messages.0.content.0.id"),
    ("thinking-no-text", body(**_msg([{"type": "thinking", "signature": "s"}], role="assistant")),
     "messages.0.content.0.thinking"),
    ("redacted-no-data", body(**_msg([{"type": "redacted_thinking"}], role="assistant")),
     "messages.0.content.0.data"),
    ("tool-result-no-id", body(**_msg([{"type": "tool_result", "content": "x"}])),
     "messages.0.content.0.tool_use_id"),
    ("tool-result-content-int", body(**_msg([{"type": "tool_result", "tool_use_id": "a",
                                              "content": 3}])),
     "messages.0.content.0.content"),
    ("tool-result-nested-bad", body(**_msg([{"type": "tool_result", "tool_use_id": "a",
                                             "content": [{"type": "audio"}]}])),
     "messages.0.content.0.content.0.type"),
    ("tool-result-nested-string", body(**_msg([{"type": "tool_result", "tool_use_id": "a",
                                                "content": ["x"]}])),
     "messages.0.content.0.content.0"),
    ("tool-result-is-error-string", body(**_msg([{"type": "tool_result", "tool_use_id": "a",
                                                  "is_error": "yes"}])),
     "messages.0.content.0.is_error"),
    ("system-int", body(system=1), "system"),
    ("system-block-image", body(system=[{"type": "image"}]), "system.0.type"),
    ("system-block-no-text", body(system=[{"type": "text"}]), "system.0.text"),
    ("system-item-string", body(system=["x"]), "system.0"),
    ("tools-object", body(tools={}), "tools"),
    ("tool-string", body(tools=["f"]), "tools.0"),
    ("tool-no-name", body(tools=[{"input_schema": {}}]), "tools.0.name"),
    ("tool-no-schema", body(tools=[{"name": "f"}]), "tools.0.input_schema"),
    ("tool-schema-string", body(tools=[{"name": "f", "input_schema": "{}"}]),
     "tools.0.input_schema"),
    ("tool-type-int", body(tools=[{"name": "f", "input_schema": {}, "type": 1}]), "tools.0.type"),
    ("tool-choice-string", body(tool_choice="auto"), "tool_choice"),
    ("tool-choice-bad-type", body(tool_choice={"type": "required"}), "tool_choice.type"),
    ("tool-choice-no-type", body(tool_choice={}), "tool_choice.type"),
    ("tool-choice-tool-no-name", body(tool_choice={"type": "tool"}), "tool_choice.name"),
    ("tool-choice-parallel-string", body(tool_choice={"type": "auto",
                                                      "disable_parallel_tool_use": "no"}),
     "tool_choice.disable_parallel_tool_use"),
    ("stop-string", body(stop_sequences="END"), "stop_sequences"),
    ("stop-int-item", body(stop_sequences=["a", 1]), "stop_sequences.1"),
    ("temperature-string", body(temperature="hot"), "temperature"),
    ("temperature-bool", body(temperature=True), "temperature"),
    ("top-p-list", body(top_p=[1]), "top_p"),
    ("top-k-float", body(top_k=1.5), "top_k"),
    ("stream-string", body(stream="yes"), "stream"),
    ("metadata-list", body(metadata=[]), "metadata"),
    ("user-id-int", body(metadata={"user_id": 5}), "metadata.user_id"),
    ("thinking-string", body(thinking="on"), "thinking"),
    ("thinking-bad-type", body(thinking={"type": "maybe"}), "thinking.type"),
    ("thinking-no-budget", body(thinking={"type": "enabled"}), "thinking.budget_tokens"),
    ("thinking-budget-string", body(thinking={"type": "enabled", "budget_tokens": "1k"}),
     "thinking.budget_tokens"),
    ("output-config-list", body(output_config=[]), "output_config"),
    ("effort-int", body(output_config={"effort": 3}), "output_config.effort"),
    ("format-bad-type", body(output_config={"format": {"type": "text"}}),
     "output_config.format.type"),
    ("format-no-schema", body(output_config={"format": {"type": "json_schema"}}),
     "output_config.format.schema"),
]


@pytest.mark.parametrize("src,param", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_decode_request_rejects(src: Any, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        am.decode_request(src, {})
    assert info.value.param == param
    assert info.value.status == 400 and info.value.kind == "invalid_request"
    if param:
        assert param in info.value.message


WEIRD_VALUES = [None, 0, -1, 1.5, True, "x", "", [], {}, [1], [{}], ["x"], {"type": 1},
                {"type": "text"}]


def _variants(src: dict[str, Any]) -> list[dict[str, Any]]:
    """Every copy of ``src`` with one leaf or container replaced by a weird value."""
    out: list[dict[str, Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        keys = list(node.keys()) if isinstance(node, dict) else range(len(node))
        for k in keys:
            for weird in WEIRD_VALUES:
                clone = copy.deepcopy(src)
                target = clone
                for p in path:
                    target = target[p]
                target[k] = copy.deepcopy(weird)
                out.append(clone)
            if isinstance(node[k], (dict, list)):
                walk(node[k], path + [k])

    walk(src, [])
    return out


FULL_BODY = body(
    system=[{"type": "text", "text": "s"}], tools=[{"name": "f", "input_schema": {"type": "object"}}],
    tool_choice={"type": "tool", "name": "f"}, thinking={"type": "enabled", "budget_tokens": 1024},
    metadata={"user_id": "u"}, stop_sequences=["x"], output_config={"effort": "low"},
    messages=TOOL_TURNS + [{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "t", "signature": "s"},
        {"type": "redacted_thinking", "data": "d"}]},
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}},
            {"type": "document", "source": {"type": "text", "data": "d"}}]}])


@pytest.mark.parametrize("decode", [am.decode_request, am.decode_count_tokens_request],
                         ids=["messages", "count_tokens"])
def test_decoder_raises_only_bad_request(decode: Any) -> None:
    variants = _variants(FULL_BODY)
    assert len(variants) > 1000
    rejected = 0
    for src in variants:
        try:
            decode(src, {})
        except BadRequest:
            rejected += 1
    assert rejected > len(variants) // 3  # most replacements are invalid and say so


def test_count_tokens_request_needs_no_max_tokens() -> None:
    src = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert am.decode_count_tokens_request(src).max_tokens is None
    with pytest.raises(BadRequest):
        am.decode_request(src, {})


# --- encode_response ---------------------------------------------------------------------------

ENCODE_CASES = [
    ("text", [TextDelta("Hel"), TextDelta("lo"), Finish("stop"), Usage(10, 2)],
     [{"type": "text", "text": "Hello"}], "end_turn",
     {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 0}),
    ("length", [TextDelta("x"), Finish("length")], [{"type": "text", "text": "x"}], "max_tokens",
     {"input_tokens": 0, "output_tokens": 0}),
    ("refusal", [Finish("content_filter")], [], "refusal", {}),
    ("cached", [TextDelta("x"), Finish("stop"), Usage(100, 5, cached_tokens=60)],
     [{"type": "text", "text": "x"}], "end_turn",
     {"input_tokens": 40, "cache_read_input_tokens": 60, "cache_creation_input_tokens": 0}),
    ("tools", [TextDelta("ok"), ToolCallStart(0, "c1", "f"), ToolCallDelta(0, '{"a"'),
               ToolCallDelta(0, ":1}"), ToolCallStart(1, "c2", "g"), Finish("tool_calls")],
     [{"type": "text", "text": "ok"},
      {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
      {"type": "tool_use", "id": "c2", "name": "g", "input": {}}], "tool_use", {}),
    ("tools-with-stop", [ToolCallStart(0, "c1", "f"), ToolCallDelta(0, "{}"), Finish("stop")],
     [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}], "tool_use", {}),
    ("bad-arguments", [ToolCallStart(0, "c1", "f"), ToolCallDelta(0, "[1,2]"),
                       ToolCallStart(1, "c2", "g"), ToolCallDelta(1, "{oops")],
     [{"type": "tool_use", "id": "c1", "name": "f", "input": {"arguments": "[1,2]"}},
      {"type": "tool_use", "id": "c2", "name": "g", "input": {"arguments": "{oops"}}],
     "tool_use", {}),
    ("thinking", [ReasoningDelta("think"), ReasoningDelta("", signature="sig"), TextDelta("a"),
                  Finish("stop"), Usage(5, 9, reasoning_tokens=4)],
     [{"type": "thinking", "thinking": "think", "signature": "sig"}, {"type": "text", "text": "a"}],
     "end_turn", {"output_tokens": 9, "output_tokens_details": {"thinking_tokens": 4}}),
    ("other-choice-ignored", [TextDelta("a"), TextDelta("b", choice=1), Finish("stop")],
     [{"type": "text", "text": "a"}], "end_turn", {}),
    ("empty", [], [], "end_turn", {"input_tokens": 0, "output_tokens": 0}),
]


@pytest.mark.parametrize("events,content,stop,usage", [c[1:] for c in ENCODE_CASES],
                         ids=[c[0] for c in ENCODE_CASES])
def test_encode_response(events: list[Any], content: list[Any], stop: str,
                         usage: dict[str, Any]) -> None:
    out = am.encode_response(events, ctx("claude-client"))
    assert out["id"] == "msg_test" and out["model"] == "claude-client"
    assert out["type"] == "message" and out["role"] == "assistant"
    assert out["content"] == content
    assert out["stop_reason"] == stop and out["stop_sequence"] is None
    assert usage.items() <= out["usage"].items()
    msg = Message.model_validate(out)
    assert msg.stop_reason == stop
    assert msg.usage.input_tokens == out["usage"]["input_tokens"]


# --- StreamEncoder -----------------------------------------------------------------------------

STREAM_EVENTS = [
    ReasoningDelta("Let me "), ReasoningDelta("think."), ReasoningDelta("", signature="Ab"),
    ReasoningDelta("", signature="Cd"), TextDelta(""), TextDelta("Hello "), TextDelta("there"),
    ToolCallStart(0, "toolu_1", "get_weather"), ToolCallDelta(0, '{"city": '),
    ToolCallDelta(0, '"Paris"}'), ToolCallStart(1, "toolu_2", "noop"),
    ToolCallDelta(0, "late"), TextDelta("x", choice=1),
    Finish("tool_calls"), Usage(input_tokens=50, output_tokens=20, cached_tokens=10),
]


def run_stream(events: list[Any], *, error: StreamError | None = None) -> bytes:
    enc = am.StreamEncoder(ctx())
    out = enc.start() + b"".join(enc.feed(ev) for ev in events)
    return out + (enc.error(error) if error else enc.finish())


def test_stream_frames_sequence() -> None:
    frames = parse_frames(run_stream(STREAM_EVENTS))
    names = [n for n, _ in frames]
    assert names == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_stop",
        "message_delta", "message_stop"]
    start = frames[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["id"] == "msg_test"
    starts = [d for n, d in frames if n == "content_block_start"]
    assert [d["index"] for d in starts] == [0, 1, 2, 3]
    assert [d["content_block"]["type"] for d in starts] == ["thinking", "text", "tool_use",
                                                            "tool_use"]
    assert starts[2]["content_block"] == {"type": "tool_use", "id": "toolu_1",
                                          "name": "get_weather", "input": {}}
    sig = [d["delta"] for n, d in frames if n == "content_block_delta"
           and d["delta"]["type"] == "signature_delta"]
    assert sig == [{"type": "signature_delta", "signature": "AbCd"}]
    delta = frames[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 40, "output_tokens": 20,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10}


STOP_CASES = [
    ("stop", [TextDelta("a"), Finish("stop")], "end_turn"),
    ("length", [TextDelta("a"), Finish("length")], "max_tokens"),
    ("filter", [Finish("content_filter")], "refusal"),
    ("no-finish", [TextDelta("a")], "end_turn"),
    ("no-finish-tools", [ToolCallStart(0, "a", "f")], "tool_use"),
    ("stop-with-tools", [ToolCallStart(0, "a", "f"), Finish("stop")], "tool_use"),
]


@pytest.mark.parametrize("events,stop", [c[1:] for c in STOP_CASES], ids=[c[0] for c in STOP_CASES])
def test_stream_stop_reason(events: list[Any], stop: str) -> None:
    frames = parse_frames(run_stream(events))
    assert frames[-2][1]["delta"]["stop_reason"] == stop
    assert frames[-1][0] == "message_stop"


def test_stream_finish_and_error_are_terminal() -> None:
    enc = am.StreamEncoder(ctx())
    enc.start()
    enc.feed(TextDelta("a"))
    assert enc.finish()
    assert enc.finish() == b"" and enc.feed(TextDelta("b")) == b""
    assert enc.error(StreamError(500, "server", "x")) == b""


ERROR_KIND_CASES = [
    ("invalid_request", "invalid_request_error"), ("authentication", "authentication_error"),
    ("permission", "permission_error"), ("not_found", "not_found_error"),
    ("request_too_large", "request_too_large"), ("rate_limit", "rate_limit_error"),
    ("server", "api_error"), ("bad_gateway", "api_error"), ("timeout", "timeout_error"),
    ("overloaded", "overloaded_error"), ("unavailable", "overloaded_error"),
    ("something_new", "api_error"),
]


@pytest.mark.parametrize("kind,anthropic_type", ERROR_KIND_CASES, ids=[c[0] for c in ERROR_KIND_CASES])
def test_error_shapes(kind: str, anthropic_type: str) -> None:
    assert am.error_body(GatewayError(kind, "boom")) == {
        "type": "error", "error": {"type": anthropic_type, "message": "boom"}}
    frames = parse_frames(run_stream([TextDelta("a")], error=StreamError(529, kind, "boom")))
    assert frames[-1] == ("error", {"type": "error",
                                    "error": {"type": anthropic_type, "message": "boom"}})
    assert "message_stop" not in [n for n, _ in frames]


# --- the real SDK as the client ----------------------------------------------------------------

def sdk_client(handler: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k", base_url="http://gateway", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def sse_handler(payload: bytes) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/messages"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=payload)
    return handle


def test_sdk_stream_accumulates_final_message() -> None:
    client = sdk_client(sse_handler(run_stream(STREAM_EVENTS)))
    with client.messages.stream(model="claude-x", max_tokens=10,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Hello there"
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[0].thinking == "Let me think." and final.content[0].signature == "AbCd"
    assert final.content[1].text == "Hello there"
    assert final.content[2].input == {"city": "Paris"} and final.content[2].id == "toolu_1"
    assert final.content[3].input == {} and final.content[3].name == "noop"
    assert final.stop_reason == "tool_use" and final.id == "msg_test"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (40, 20)
    assert final.usage.cache_read_input_tokens == 10


def test_sdk_stream_error_raises() -> None:
    payload = run_stream([TextDelta("a")], error=StreamError(529, "overloaded", "Overloaded"))
    client = sdk_client(sse_handler(payload))
    with pytest.raises(anthropic.APIStatusError) as info, client.messages.stream(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.get_final_message()
    assert "Overloaded" in str(info.value)


def test_sdk_non_stream_and_models() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=am.models_list(["claude-a", "claude-b"]))
        events = [TextDelta("Hi"), ToolCallStart(0, "t", "f"), ToolCallDelta(0, '{"q":1}'),
                  Finish("tool_calls"), Usage(3, 4)]
        return httpx.Response(200, json=am.encode_response(events, ctx()))

    client = sdk_client(handle)
    msg = client.messages.create(model="claude-x", max_tokens=5,
                                 messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "Hi" and msg.content[1].input == {"q": 1}
    assert msg.stop_reason == "tool_use" and msg.usage.output_tokens == 4
    models = list(client.models.list())
    assert [m.id for m in models] == ["claude-a", "claude-b"]
    assert models[0].display_name == "claude-a" and models[0].created_at.year == 2025


# --- models and token counting -----------------------------------------------------------------

@pytest.mark.parametrize("models,first,last", [([], None, None), (["a"], "a", "a"),
                                               (["a", "b", "c"], "a", "c")],
                         ids=["empty", "one", "three"])
def test_models_list(models: list[str], first: str | None, last: str | None) -> None:
    out = am.models_list(models)
    assert out["has_more"] is False and (out["first_id"], out["last_id"]) == (first, last)
    assert [ModelInfo.model_validate(m).id for m in out["data"]] == models


def _req(**kw: Any) -> CanonicalRequest:
    kw.setdefault("messages", [])
    return CanonicalRequest(model="m", **kw)


COUNT_CASES = [
    ("nothing", _req(), 1),
    ("one-text", _req(messages=[{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]),
     1 + 4),
    ("system", _req(system="x" * 8, messages=[{"role": "user", "content": [{"type": "text",
                                                                            "text": "y" * 4}]}]),
     3 + 4 + 3),
    ("rounds-up", _req(messages=[{"role": "user", "content": [{"type": "text", "text": "abcde"}]}]),
     2 + 4),
    ("image", _req(messages=[{"role": "user", "content": [{"type": "image", "url": "u"}]}]),
     1500 + 4),
    ("tool-call-and-result", _req(messages=[
        {"role": "assistant", "content": [{"type": "tool_call", "id": "i", "name": "ff",
                                           "arguments": "{}"}]},
        {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "i", "name": "ff",
                                      "content": "abcd", "is_error": False}]}]), 2 + 8),
    ("tools", _req(tools=[{"name": "f", "description": None, "parameters": None}]),
     -(-len(b'{"name":"f","description":null,"parameters":null}') // 4)),
    ("thinking-and-string-content", _req(messages=[
        {"role": "assistant", "content": [{"type": "thinking", "text": "abcd", "signature": "s"}]},
        {"role": "user", "content": "abcd"}]), 2 + 8),
]


@pytest.mark.parametrize("req,tokens", [c[1:] for c in COUNT_CASES], ids=[c[0] for c in COUNT_CASES])
def test_count_tokens(req: CanonicalRequest, tokens: int) -> None:
    assert estimate_tokens(req) == tokens
    assert am.count_tokens_body(req) == {"input_tokens": tokens}


def test_count_tokens_grows_with_input() -> None:
    small = am.decode_count_tokens_request({"model": "m", "messages": [{"role": "user",
                                                                        "content": "hi"}]})
    big = am.decode_count_tokens_request({"model": "m", "messages": [{"role": "user",
                                                                      "content": "hi " * 400}]})
    assert estimate_tokens(big) > estimate_tokens(small) >= 1
