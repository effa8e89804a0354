from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

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
from router.client_codecs import openai_chat as oc
from router.errors import BadRequest, GatewayError

USER = {"role": "user", "content": "hi"}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [USER], **extra}


def ctx(include_usage: bool = False, **req: Any) -> ResponseContext:
    request = CanonicalRequest(model="gpt-4o", messages=[], include_usage=include_usage, **req)
    return ResponseContext(id="chatcmpl-abc", model="gpt-4o", created=1727346171, request=request)


def frames(data: bytes) -> list[Any]:
    """Split SSE bytes into parsed data payloads ("[DONE]" kept as a string)."""
    assert data.endswith(b"\n\n")
    out: list[Any] = []
    for frame in data.split(b"\n\n")[:-1]:
        assert frame.startswith(b"data: "), frame
        payload = frame[6:]
        out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


def stream(events: list[Any], include_usage: bool = False) -> bytes:
    enc = oc.StreamEncoder(ctx(include_usage))
    return enc.start() + b"".join(enc.feed(e) for e in events) + enc.finish()


# --- decode_request: good input -------------------------------------------------------------------

DECODE_CASES = [
    (
        "system_and_developer_joined",
        body(messages=[
            {"role": "system", "content": "A"},
            {"role": "developer", "content": [{"type": "text", "text": "B"}, {"type": "text", "text": "C"}]},
            USER,
        ]),
        {"system": "A\n\nB\n\nC", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    ),
    ("no_system", body(), {"system": None}),
    (
        "user_parts_https_and_data_images",
        body(messages=[{"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
        ]}]),
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image", "url": "https://x/i.png", "media_type": None, "data": None},
            {"type": "image", "url": None, "media_type": "image/png", "data": "QUJD"},
        ]}]},
    ),
    (
        "assistant_tool_calls_reasoning_and_tool_result_name",
        body(messages=[
            USER,
            {"role": "assistant", "content": None, "reasoning_content": "think",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "21"},
                                                                    {"type": "text", "text": "C"}]},
            {"role": "tool", "tool_call_id": "call_unknown", "content": "x"},
        ]),
        {"messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "text": "think", "signature": None},
                {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            ]},
            {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "call_1", "name": "get_weather",
                                          "content": "21C", "is_error": False}]},
            {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "call_unknown", "name": None,
                                          "content": "x", "is_error": False}]},
        ]},
    ),
    (
        "assistant_text_and_refusal_parts",
        body(messages=[USER, {"role": "assistant", "content": [
            {"type": "text", "text": "a"}, {"type": "refusal", "refusal": "no"}]}]),
        {"messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "no"}]},
        ]},
    ),
    (
        "deprecated_function_call_and_function_role",
        body(messages=[
            USER,
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "ok"},
        ], functions=[{"name": "f", "parameters": {"type": "object"}}], function_call={"name": "f"}),
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "tool_call", "id": "call_1_f", "name": "f",
                                                   "arguments": "{}"}]},
                {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "call_1_f", "name": "f",
                                              "content": "ok", "is_error": False}]},
            ],
            "tools": [{"name": "f", "description": None, "parameters": {"type": "object"}}],
            "tool_choice": {"name": "f"},
        },
    ),
    (
        "tools_and_named_tool_choice",
        body(tools=[{"type": "function", "function": {"name": "f", "description": "d",
                                                      "parameters": {"type": "object"}, "strict": True}}],
             tool_choice={"type": "function", "function": {"name": "f"}}, parallel_tool_calls=False),
        {"tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}}],
         "tool_choice": {"name": "f"}, "parallel_tool_calls": False},
    ),
    ("tool_choice_required", body(tool_choice="required"), {"tool_choice": "required"}),
    ("function_call_auto", body(function_call="auto"), {"tool_choice": "auto"}),
    (
        "response_format_json_schema",
        body(response_format={"type": "json_schema",
                              "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True}}),
        {"response_format": {"type": "json_schema", "schema": {"type": "object"}, "name": "r", "strict": True}},
    ),
    (
        "response_format_json_object",
        body(response_format={"type": "json_object"}),
        {"response_format": {"type": "json_object", "schema": None, "name": None, "strict": None}},
    ),
    ("max_completion_tokens_preferred", body(max_tokens=10, max_completion_tokens=20), {"max_tokens": 20}),
    ("max_tokens_fallback", body(max_tokens=10), {"max_tokens": 10}),
    ("stop_string", body(stop="END"), {"stop": ["END"]}),
    ("stop_list", body(stop=["a", "b"]), {"stop": ["a", "b"]}),
    (
        "sampling_fields",
        body(n=2, seed=7, temperature=0.5, top_p=1, user="u", metadata={"k": "v"}),
        {"n": 2, "seed": 7, "temperature": 0.5, "top_p": 1.0, "user": "u", "metadata": {"k": "v"}},
    ),
    ("reasoning_effort", body(reasoning_effort="high"), {"reasoning": {"effort": "high", "budget": None}}),
    (
        "stream_include_usage",
        body(stream=True, stream_options={"include_usage": True}),
        {"stream": True, "include_usage": True},
    ),
    ("nulls_are_absent", body(temperature=None, stop=None, tools=None, stream=None),
     {"temperature": None, "stop": None, "tools": None, "stream": False}),
]


@pytest.mark.parametrize("payload,expected", [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decode_request(payload: dict[str, Any], expected: dict[str, Any]) -> None:
    req = oc.decode_request(payload, {})
    for key, value in expected.items():
        assert getattr(req, key) == value, key
    assert req.raw is payload
    assert req.inbound == "openai.chat"
    assert req.model == "gpt-4o"


# --- decode_request: bad input ------------------------------------------------------------------

BAD_CASES = [
    ("body_list", [], None),
    ("body_string", "x", None),
    ("body_null", None, None),
    ("missing_model", {"messages": [USER]}, "model"),
    ("model_number", {"model": 1, "messages": [USER]}, "model"),
    ("missing_messages", {"model": "m"}, "messages"),
    ("messages_object", {"model": "m", "messages": {}}, "messages"),
    ("messages_empty", {"model": "m", "messages": []}, "messages"),
    ("message_string", body(messages=["hi"]), "messages[0]"),
    ("bad_role", body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    ("user_content_number", body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    ("user_part_not_object", body(messages=[{"role": "user", "content": ["x"]}]), "messages[0].content[0]"),
    ("user_part_audio", body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
     "messages[0].content[0].type"),
    ("text_part_missing_text", body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
     "messages[0].content[0].text"),
    ("image_ftp", body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x"}}]}]), "messages[0].content[0].image_url.url"),
    ("image_data_not_base64", body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]), "messages[0].content[0].image_url.url"),
    ("image_url_number", body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": 3}}]}]), "messages[0].content[0].image_url.url"),
    ("system_image_part", body(messages=[{"role": "system", "content": [{"type": "image_url"}]}]),
     "messages[0].content[0].type"),
    ("system_null", body(messages=[{"role": "system", "content": None}]), "messages[0].content"),
    ("assistant_content_number", body(messages=[{"role": "assistant", "content": 1}]), "messages[0].content"),
    ("tool_calls_object", body(messages=[{"role": "assistant", "tool_calls": {}}]), "messages[0].tool_calls"),
    ("tool_call_no_id", body(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]),
     "messages[0].tool_calls[0].id"),
    ("tool_call_args_object", body(messages=[{"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": {}}}]}]), "messages[0].tool_calls[0].function.arguments"),
    ("reasoning_content_number", body(messages=[{"role": "assistant", "reasoning_content": 1}]),
     "messages[0].reasoning_content"),
    ("tool_without_id", body(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
    ("function_without_name", body(messages=[{"role": "function", "content": "x"}]), "messages[0].name"),
    ("temperature_string", body(temperature="hot"), "temperature"),
    ("temperature_bool", body(temperature=True), "temperature"),
    ("temperature_out_of_range", body(temperature=3), "temperature"),
    ("top_p_string", body(top_p="1"), "top_p"),
    ("max_tokens_float", body(max_tokens=1.5), "max_tokens"),
    ("max_completion_tokens_zero", body(max_completion_tokens=0), "max_completion_tokens"),
    ("n_zero", body(n=0), "n"),
    ("seed_string", body(seed="1"), "seed"),
    ("stop_number", body(stop=1), "stop"),
    ("stop_list_mixed", body(stop=["a", 1]), "stop"),
    ("stream_string", body(stream="yes"), "stream"),
    ("stream_options_list", body(stream_options=[]), "stream_options"),
    ("include_usage_string", body(stream_options={"include_usage": "y"}), "stream_options.include_usage"),
    ("user_number", body(user=1), "user"),
    ("metadata_list", body(metadata=[]), "metadata"),
    ("parallel_tool_calls_string", body(parallel_tool_calls="no"), "parallel_tool_calls"),
    ("reasoning_effort_number", body(reasoning_effort=1), "reasoning_effort"),
    ("tools_object", body(tools={}), "tools"),
    ("tool_wrong_type", body(tools=[{"type": "code"}]), "tools[0].type"),
    ("tool_function_missing", body(tools=[{"type": "function"}]), "tools[0].function"),
    ("tool_no_name", body(tools=[{"type": "function", "function": {}}]), "tools[0].function.name"),
    ("tool_parameters_list", body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
     "tools[0].function.parameters"),
    ("functions_string", body(functions="f"), "functions"),
    ("tool_choice_bad_string", body(tool_choice="sometimes"), "tool_choice"),
    ("tool_choice_number", body(tool_choice=1), "tool_choice"),
    ("tool_choice_wrong_type", body(tool_choice={"type": "custom"}), "tool_choice.type"),
    ("tool_choice_no_name", body(tool_choice={"type": "function", "function": {}}), "tool_choice.function"),
    ("response_format_string", body(response_format="json"), "response_format"),
    ("response_format_bad_type", body(response_format={"type": "yaml"}), "response_format.type"),
    ("json_schema_missing", body(response_format={"type": "json_schema"}), "response_format.json_schema"),
    ("json_schema_schema_list", body(response_format={"type": "json_schema", "json_schema": {"schema": []}}),
     "response_format.json_schema.schema"),
]


@pytest.mark.parametrize("payload,param", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_decode_request_rejects(payload: Any, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        oc.decode_request(payload, {})
    assert info.value.param == param
    assert info.value.status == 400


# --- encode_response --------------------------------------------------------------------------------

ENCODE_CASES = [
    (
        "text",
        [TextDelta("Hel"), TextDelta("lo"), Finish("stop"), Usage(9, 2, 3, 1)],
        {"content": "Hello", "finish_reason": "stop",
         "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
                   "prompt_tokens_details": {"cached_tokens": 3},
                   "completion_tokens_details": {"reasoning_tokens": 1}}},
    ),
    (
        "tool_calls_only",
        [ToolCallStart(0, "call_x", "f"), ToolCallDelta(0, '{"a"'), ToolCallDelta(0, ":1}"), Finish("tool_calls")],
        {"content": None, "finish_reason": "tool_calls",
         "tool_calls": [{"id": "call_x", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]},
    ),
    ("reasoning", [ReasoningDelta("hmm"), TextDelta("ok")], {"content": "ok", "reasoning_content": "hmm"}),
    ("empty", [], {"content": "", "finish_reason": "stop",
                   "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                             "prompt_tokens_details": {"cached_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 0}}}),
    ("length", [TextDelta("a"), Finish("length")], {"finish_reason": "length"}),
]


@pytest.mark.parametrize("events,expected", [c[1:] for c in ENCODE_CASES], ids=[c[0] for c in ENCODE_CASES])
def test_encode_response(events: list[Any], expected: dict[str, Any]) -> None:
    obj = oc.encode_response(events, ctx())
    parsed = ChatCompletion.model_validate(obj)
    assert (obj["id"], obj["object"], obj["created"], obj["model"]) == (
        "chatcmpl-abc", "chat.completion", 1727346171, "gpt-4o")
    choice = obj["choices"][0]
    assert choice["index"] == 0 and choice["logprobs"] is None
    msg = choice["message"]
    assert msg["role"] == "assistant" and msg["refusal"] is None
    assert ("tool_calls" in msg) == ("tool_calls" in expected)
    assert ("reasoning_content" in msg) == ("reasoning_content" in expected)
    for key, value in expected.items():
        if key == "finish_reason":
            assert choice["finish_reason"] == value
        elif key == "usage":
            assert obj["usage"] == value
        else:
            assert msg[key] == value, key
    assert parsed.choices[0].message.content == msg["content"]


def test_encode_response_n_choices() -> None:
    obj = oc.encode_response([TextDelta("a", choice=1), TextDelta("b", choice=0), Finish("stop", 1)], ctx())
    assert [(c["index"], c["message"]["content"]) for c in obj["choices"]] == [(0, "b"), (1, "a")]
    ChatCompletion.model_validate(obj)


# --- streaming ---------------------------------------------------------------------------------------


def accumulate(data: bytes) -> Any:
    state = ChatCompletionStreamState()
    for payload in frames(data):
        if payload == "[DONE]":
            break
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    return state.get_final_completion()


def test_stream_text_frames_exact() -> None:
    out = frames(stream([TextDelta("Hel"), TextDelta(""), TextDelta("lo"), Finish("stop")]))
    head = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1727346171, "model": "gpt-4o"}
    assert out == [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": None, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "lo"}, "logprobs": None, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
        "[DONE]",
    ]


STREAM_CASES = [
    (
        "tool_calls_accumulate",
        [ToolCallStart(0, "call_a", "f"), ToolCallDelta(0, '{"x"'), ToolCallDelta(0, ': 1}'),
         ToolCallStart(1, "call_b", "g"), ToolCallDelta(1, "{}"), Finish("tool_calls")],
        {"content": None, "finish": "tool_calls", "calls": [("call_a", "f", '{"x": 1}'), ("call_b", "g", "{}")]},
    ),
    (
        "reasoning_then_text",
        [ReasoningDelta("why"), ReasoningDelta("", signature="sig"), TextDelta("42"), Finish("stop")],
        {"content": "42", "finish": "stop", "calls": []},
    ),
    ("unfinished_text_closed_by_finish", [TextDelta("a")], {"content": "a", "finish": "stop", "calls": []}),
    ("unfinished_tools_closed_as_tool_calls", [ToolCallStart(0, "c", "f")],
     {"content": None, "finish": "tool_calls", "calls": [("c", "f", "")]}),
    ("no_events", [], {"content": "", "finish": "stop", "calls": []}),
]


@pytest.mark.parametrize("events,expected", [c[1:] for c in STREAM_CASES], ids=[c[0] for c in STREAM_CASES])
def test_stream_accumulates_in_sdk(events: list[Any], expected: dict[str, Any]) -> None:
    data = stream(events)
    payloads = frames(data)
    assert payloads[-1] == "[DONE]"
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert sum(1 for p in payloads[:-1] if p["choices"][0]["delta"].get("role")) == 1
    for p in payloads[:-1]:
        assert all("logprobs" in c and "finish_reason" in c for c in p["choices"])
    final = accumulate(data)
    choice = final.choices[0]
    assert choice.finish_reason == expected["finish"]
    assert (choice.message.content or None) == (expected["content"] or None)
    calls = [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls or []]
    assert calls == expected["calls"]


def test_stream_reasoning_delta_field() -> None:
    out = frames(stream([ReasoningDelta("why")]))
    assert out[1]["choices"][0]["delta"] == {"reasoning_content": "why"}


@pytest.mark.parametrize(
    "include_usage,usage,expected",
    [
        (True, Usage(79, 11, 5, 2), {"prompt_tokens": 79, "completion_tokens": 11, "total_tokens": 90,
                                     "prompt_tokens_details": {"cached_tokens": 5},
                                     "completion_tokens_details": {"reasoning_tokens": 2}}),
        (True, None, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}}),
        (False, Usage(1, 1), None),
    ],
    ids=["usage", "usage_missing_zeros", "not_requested"],
)
def test_stream_usage_chunk(include_usage: bool, usage: Usage | None, expected: dict[str, Any] | None) -> None:
    events: list[Any] = [TextDelta("a"), Finish("stop")] + ([usage] if usage else [])
    payloads = frames(stream(events, include_usage))
    assert payloads[-1] == "[DONE]"
    last = payloads[-2]
    if expected is None:
        assert "usage" not in last and last["choices"][0]["finish_reason"] == "stop"
    else:
        assert last["choices"] == [] and last["usage"] == expected
        assert ChatCompletionChunk.model_validate(last).usage.total_tokens == expected["total_tokens"]


def test_stream_constant_head_and_sdk_valid_chunks() -> None:
    events = [TextDelta("a"), TextDelta("b", choice=1), ToolCallStart(0, "c", "f"), Finish("stop", 1), Usage(1, 2)]
    payloads = frames(stream(events, include_usage=True))[:-1]
    assert {(p["id"], p["created"], p["model"], p["object"]) for p in payloads} == {
        ("chatcmpl-abc", 1727346171, "gpt-4o", "chat.completion.chunk")}
    for p in payloads:
        ChatCompletionChunk.model_validate(p)
    roles = [p["choices"][0]["index"] for p in payloads if p["choices"] and "role" in p["choices"][0]["delta"]]
    assert sorted(roles) == [0, 1]


def test_stream_finish_once_per_choice() -> None:
    payloads = frames(stream([TextDelta("a"), Finish("length"), Finish("stop")]))
    finishes = [p["choices"][0]["finish_reason"] for p in payloads[:-1] if p["choices"][0]["finish_reason"]]
    assert finishes == ["length"]


@pytest.mark.parametrize(
    "kind,etype",
    [("rate_limit", "rate_limit_error"), ("server", "server_error"), ("bad_gateway", "server_error"),
     ("invalid_request", "invalid_request_error")],
    ids=["rate_limit", "server", "bad_gateway", "invalid"],
)
def test_stream_error_frame(kind: str, etype: str) -> None:
    enc = oc.StreamEncoder(ctx())
    out = enc.feed(TextDelta("a")) + enc.error(StreamError(status=500, kind=kind, message="boom"))
    payloads = frames(out)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2] == {"error": {"message": "boom", "type": etype, "code": None, "param": None}}
    assert enc.feed(StreamError(500, kind, "boom")) == enc.error(StreamError(500, kind, "boom"))


# --- error_body ---------------------------------------------------------------------------------------

ERROR_CASES = [
    ("invalid", GatewayError("invalid_request", "bad", param="temperature"),
     {"type": "invalid_request_error", "param": "temperature", "code": None}),
    ("auth_default_code", GatewayError("authentication", "no key"),
     {"type": "authentication_error", "param": None, "code": "invalid_api_key"}),
    ("permission", GatewayError("permission", "no"), {"type": "permission_error", "param": None, "code": None}),
    ("not_found_keeps_code", GatewayError("not_found", "nope", code="model_not_found"),
     {"type": "not_found_error", "param": None, "code": "model_not_found"}),
    ("rate_limit", GatewayError("rate_limit", "slow"),
     {"type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}),
    ("too_large", GatewayError("request_too_large", "big"),
     {"type": "invalid_request_error", "param": None, "code": None}),
    ("server", GatewayError("server", "oops"), {"type": "server_error", "param": None, "code": None}),
    ("unavailable", GatewayError("unavailable", "down"), {"type": "server_error", "param": None, "code": None}),
    ("overloaded", GatewayError("overloaded", "busy"), {"type": "server_error", "param": None, "code": None}),
    ("timeout", GatewayError("timeout", "slow"), {"type": "timeout_error", "param": None, "code": None}),
    ("unknown_kind", GatewayError("weird", "?"), {"type": "server_error", "param": None, "code": None}),
    ("bad_request_class", BadRequest("bad model", param="model", code="x"),
     {"type": "invalid_request_error", "param": "model", "code": "x"}),
]


@pytest.mark.parametrize("err,expected", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_error_body(err: GatewayError, expected: dict[str, Any]) -> None:
    assert oc.error_body(err) == {"error": {"message": err.message, **expected}}


# --- through the real openai SDK client -------------------------------------------------------------


async def sdk_client(aiohttp_server: Any, status: int, payload: bytes, content_type: str) -> Any:
    import openai
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=payload, content_type=content_type)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    return openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k", max_retries=0)


async def test_sdk_streams_tool_calls_and_usage(aiohttp_server: Any) -> None:
    events = [TextDelta("hi"), ToolCallStart(0, "call_a", "f"), ToolCallDelta(0, '{"q":'), ToolCallDelta(0, '"x"}'),
              Finish("tool_calls"), Usage(3, 4)]
    client = await sdk_client(aiohttp_server, 200, stream(events, include_usage=True), "text/event-stream")
    async with client.chat.completions.stream(model="gpt-4o", messages=[USER]) as s:
        final = await s.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == "hi"
    assert [(t.id, t.function.name, t.function.arguments) for t in msg.tool_calls] == [("call_a", "f", '{"q":"x"}')]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 7


async def test_sdk_raises_on_stream_error_frame(aiohttp_server: Any) -> None:
    import openai

    enc = oc.StreamEncoder(ctx())
    data = enc.feed(TextDelta("a")) + enc.error(StreamError(502, "bad_gateway", "upstream reset"))
    client = await sdk_client(aiohttp_server, 200, data, "text/event-stream")
    with pytest.raises(openai.APIError, match="upstream reset"):
        async for _ in await client.chat.completions.create(model="gpt-4o", messages=[USER], stream=True):
            pass


@pytest.mark.parametrize(
    "err,exc_name",
    [(GatewayError("rate_limit", "slow down"), "RateLimitError"),
     (GatewayError("not_found", "no model", code="model_not_found"), "NotFoundError"),
     (BadRequest("bad", param="temperature"), "BadRequestError")],
    ids=["429", "404", "400"],
)
async def test_sdk_error_body(aiohttp_server: Any, err: GatewayError, exc_name: str) -> None:
    import openai

    client = await sdk_client(aiohttp_server, err.status, orjson.dumps(oc.error_body(err)), "application/json")
    with pytest.raises(getattr(openai, exc_name)) as info:
        await client.chat.completions.create(model="gpt-4o", messages=[USER])
    assert info.value.code == oc.error_body(err)["error"]["code"]
    assert info.value.param == err.param


async def test_sdk_parses_completion(aiohttp_server: Any) -> None:
    obj = oc.encode_response([ReasoningDelta("r"), TextDelta("Hi"), Finish("stop"), Usage(9, 2)], ctx())
    client = await sdk_client(aiohttp_server, 200, orjson.dumps(obj), "application/json")
    res = await client.chat.completions.create(model="gpt-4o", messages=[USER])
    assert res.choices[0].message.content == "Hi"
    assert res.usage is not None and res.usage.total_tokens == 11


# --- reasoning signatures on tool calls (extra_content.google.thought_signature) ----------------------

SIGNED = [ReasoningDelta("", signature="SIG"), ToolCallStart(0, "call_a", "f"), ToolCallDelta(0, "{}"),
          ToolCallStart(1, "call_b", "g"), ToolCallDelta(1, "{}"), Finish("tool_calls")]
EXTRA = {"google": {"thought_signature": "SIG"}}


def test_encode_response_puts_the_signature_on_its_call() -> None:
    c = ctx()
    msg = oc.encode_response(SIGNED, c)["choices"][0]["message"]
    assert [t.get("extra_content") for t in msg["tool_calls"]] == [EXTRA, None]  # parallel call: none of its own
    assert c.signed_calls == [("call_a", "SIG")]
    parsed = ChatCompletion.model_validate(oc.encode_response(SIGNED, ctx()))
    assert parsed.choices[0].message.tool_calls[0].model_extra == {"extra_content": EXTRA}


def test_stream_sends_the_signature_once_on_the_calls_first_chunk() -> None:
    c = ctx()
    enc = oc.StreamEncoder(c)
    data = enc.start() + b"".join(enc.feed(e) for e in SIGNED) + enc.finish()
    with_extra = [p for p in frames(data)[:-1]
                  if "extra_content" in str(p["choices"][0]["delta"].get("tool_calls", ""))]
    assert len(with_extra) == 1
    assert with_extra[0]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_a"
    assert c.signed_calls == [("call_a", "SIG")]
    calls = accumulate(data).choices[0].message.tool_calls  # the SDK's accumulator keeps it, unchanged
    assert [t.model_extra.get("extra_content") for t in calls] == [EXTRA, None]


def test_calls_without_a_signature_carry_nothing_extra() -> None:
    c = ctx()
    events = [ToolCallStart(0, "call_a", "f"), ToolCallDelta(0, "{}"), Finish("tool_calls")]
    assert "extra_content" not in str(oc.encode_response(events, c))
    assert b"extra_content" not in stream(events) and c.signed_calls is None


def signed_call(cid: str, sig: Any = "SIG") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "f", "arguments": "{}"},
            "extra_content": {"google": {"thought_signature": sig}}}


SIGNATURE_DECODE_CASES = [
    pytest.param({"role": "assistant", "tool_calls": [signed_call("c1")]},
                 [{"type": "thinking", "text": "", "signature": "SIG"},
                  {"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"}], id="signed-call"),
    pytest.param({"role": "assistant", "reasoning_content": "why", "tool_calls": [signed_call("c1")]},
                 [{"type": "thinking", "text": "why", "signature": "SIG"},
                  {"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"}], id="with-reasoning"),
    pytest.param({"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"},
         "extra_content": {"other_vendor": {"x": 1}}}]},
        [{"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"}], id="other-vendor-ignored"),
]


@pytest.mark.parametrize("assistant,parts", SIGNATURE_DECODE_CASES)
def test_decode_reads_the_signature_back(assistant: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    req = oc.decode_request(body(messages=[USER, assistant]), {})
    assert req.messages[1]["content"] == parts


@pytest.mark.parametrize("extra,param", [
    ("x", "messages[1].tool_calls[0].extra_content"),
    ({"google": []}, "messages[1].tool_calls[0].extra_content.google"),
    ({"google": {"thought_signature": 5}}, "messages[1].tool_calls[0].extra_content.google.thought_signature"),
])
def test_decode_rejects_a_malformed_signature(extra: Any, param: str) -> None:
    call = {**signed_call("c1"), "extra_content": extra}
    with pytest.raises(BadRequest) as info:
        oc.decode_request(body(messages=[USER, {"role": "assistant", "tool_calls": [call]}]), {})
    assert info.value.param == param


def test_prepare_puts_remembered_signatures_back() -> None:
    from router.codecs import Stores
    from router.signature_memory import SignatureMemory

    memory = SignatureMemory(10)
    stores = Stores(signatures=memory)
    memory.remember("alice", [("c1", "REMEMBERED")])
    bare = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    req = oc.prepare(stores, oc.decode_request(body(messages=[USER, {"role": "assistant", "tool_calls": [bare]}]), {}),
                     "alice")
    assert req.messages[1]["content"][0] == {"type": "thinking", "text": "", "signature": "REMEMBERED"}
    kept = oc.prepare(stores, oc.decode_request(body(messages=[USER, {"role": "assistant", "tool_calls": [
        signed_call("c1", "CLIENT")]}]), {}), "alice")
    assert [p.get("signature") for p in kept.messages[1]["content"]] == ["CLIENT", None]  # the client's wins
    other = oc.prepare(stores, oc.decode_request(body(messages=[USER, {"role": "assistant", "tool_calls": [bare]}]),
                                                 {}), "bob")
    assert [p["type"] for p in other.messages[1]["content"]] == ["tool_call"]
    assert oc.prepare(Stores(), req, "alice") is req  # no memory configured: nothing to do
