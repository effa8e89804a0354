"""The Ollama client dialect (router.client_codecs.ollama): request decoding, answers and NDJSON streams,
table-driven, and the answers parsed by the official ``ollama`` client's own types."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from ollama import ChatResponse, GenerateResponse, ListResponse, ShowResponse

from router.canonical import (
    CanonicalRequest,
    Event,
    Finish,
    ReasoningDelta,
    ResponseContext,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from router.client_codecs import ollama as o
from router.codecs import ModelEntry
from router.errors import BadRequest, GatewayError

MODEL = "llama3.2"
PNG = "iVBORw0KGgoAAAANSUhEUg"
JPEG = "/9j/4AAQSkZJRg"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def chat(*messages: dict[str, Any], **extra: Any) -> CanonicalRequest:
    return o.decode_chat({"model": MODEL, "messages": list(messages), **extra}, {})


def generate(**extra: Any) -> CanonicalRequest:
    return o.decode_generate({"model": MODEL, "prompt": "hi", **extra}, {})


def ctx() -> ResponseContext:
    return ResponseContext(id="x", model=MODEL, created=1700000000, request=CanonicalRequest(MODEL, []))


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


# --- decode: messages --------------------------------------------------------------------------------

MESSAGE_CASES = [
    pytest.param([{"role": "user", "content": "hi"}], None, [{"role": "user", "content": [text("hi")]}],
                 id="user-text"),
    pytest.param([{"role": "system", "content": "a"}, {"role": "SYSTEM", "content": "b"},
                  {"role": "user", "content": "hi"}], "a\n\nb", [{"role": "user", "content": [text("hi")]}],
                 id="systems-joined-roles-lower-cased"),
    pytest.param([{"role": "user", "content": "what?", "images": [PNG, JPEG, "AAAA"]}], None,
                 [{"role": "user", "content": [
                     {"type": "image", "url": None, "media_type": "image/png", "data": PNG},
                     {"type": "image", "url": None, "media_type": "image/jpeg", "data": JPEG},
                     {"type": "image", "url": None, "media_type": "image/png", "data": "AAAA"},
                     text("what?")]}],
                 id="images-typed-by-their-first-bytes"),
    pytest.param([{"role": "user", "content": "", "images": [PNG]}], None,
                 [{"role": "user", "content": [{"type": "image", "url": None, "media_type": "image/png",
                                                "data": PNG}]}],
                 id="image-alone"),
    pytest.param([{"role": "user", "content": "w?"},
                  {"role": "assistant", "content": "", "thinking": "hmm", "tool_calls": [
                      {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                      {"function": {"name": "get_time", "arguments": {}}}]},
                  {"role": "tool", "content": "12:00", "tool_name": "get_time"},
                  {"role": "tool", "content": "sunny", "tool_name": "get_weather"}], None,
                 [{"role": "user", "content": [text("w?")]},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "text": "hmm", "signature": None},
                      {"type": "tool_call", "id": "call_1_0", "name": "get_weather", "arguments": '{"city":"Paris"}'},
                      {"type": "tool_call", "id": "call_1_1", "name": "get_time", "arguments": "{}"}]},
                  {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "call_1_1", "name": "get_time",
                                                "content": "12:00", "is_error": False}]},
                  {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "call_1_0",
                                                "name": "get_weather", "content": "sunny", "is_error": False}]}],
                 id="id-less-calls-answered-by-tool-name"),
    pytest.param([{"role": "user", "content": "w?"},
                  {"role": "assistant", "content": "ok", "tool_calls": [
                      {"id": "c1", "function": {"name": "f", "arguments": {}}},
                      {"id": "c2", "function": {"name": "f", "arguments": {}}}]},
                  {"role": "tool", "content": "two", "tool_call_id": "c2"},
                  {"role": "tool", "content": "one"}], None,
                 [{"role": "user", "content": [text("w?")]},
                  {"role": "assistant", "content": [
                      text("ok"),
                      {"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"},
                      {"type": "tool_call", "id": "c2", "name": "f", "arguments": "{}"}]},
                  {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c2", "name": "f",
                                                "content": "two", "is_error": False}]},
                  {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c1", "name": "f",
                                                "content": "one", "is_error": False}]}],
                 id="ids-kept-and-an-anonymous-result-takes-the-first-open-call"),
    pytest.param([{"role": "user", "content": "x"}, {"role": "tool", "content": "orphan", "tool_name": "f"}], None,
                 [{"role": "user", "content": [text("x")]},
                  {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "call_1", "name": "f",
                                                "content": "orphan", "is_error": False}]}],
                 id="a-result-with-no-open-call-gets-an-id"),
]


@pytest.mark.parametrize(("messages", "system", "expected"), MESSAGE_CASES)
def test_decode_messages(messages: list[dict[str, Any]], system: str | None, expected: list[dict[str, Any]]) -> None:
    req = chat(*messages)
    assert (req.system, req.messages) == (system, expected)
    assert req.inbound == "ollama.chat"


# --- decode: the other fields --------------------------------------------------------------------------

FIELD_CASES = [
    pytest.param({}, {"stream": True, "include_usage": True, "tools": None, "response_format": None,
                      "reasoning": None, "max_tokens": None}, id="stream-defaults-to-true"),
    pytest.param({"stream": False}, {"stream": False}, id="stream-off"),
    pytest.param({"tools": []}, {"tools": None}, id="empty-tools"),
    pytest.param({"tools": [{"type": "function", "function": {"name": "get_weather", "description": "w",
                                                              "parameters": WEATHER}}]},
                 {"tools": [{"name": "get_weather", "description": "w", "parameters": WEATHER}]}, id="tools"),
    pytest.param({"format": "json"}, {"response_format": {"type": "json_object", "schema": None, "name": None,
                                                          "strict": None}}, id="format-json"),
    pytest.param({"format": WEATHER}, {"response_format": {"type": "json_schema", "schema": WEATHER, "name": None,
                                                           "strict": None}}, id="format-schema"),
    pytest.param({"format": ""}, {"response_format": None}, id="format-empty"),
    pytest.param({"options": {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 100,
                              "stop": ["\n", "user:"], "seed": 42, "num_ctx": 4096}},
                 {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 100, "stop": ["\n", "user:"],
                  "seed": 42}, id="options"),
    pytest.param({"options": {"num_predict": -1, "top_k": 0, "stop": []}},
                 {"max_tokens": None, "top_k": None, "stop": None}, id="options-no-limit"),
    pytest.param({"think": True}, {"reasoning": {"effort": "medium", "budget": None}}, id="think-true"),
    pytest.param({"think": False}, {"reasoning": None}, id="think-false"),
    pytest.param({"think": "low"}, {"reasoning": {"effort": "low", "budget": None}}, id="think-low"),
    pytest.param({"think": "max"}, {"reasoning": {"effort": "high", "budget": None}}, id="think-max"),
    pytest.param({"model": "llama3.2:latest"}, {"model": "llama3.2"}, id="latest-tag-dropped"),
    pytest.param({"model": "qwen3:8b", "keep_alive": "5m", "logprobs": False}, {"model": "qwen3:8b"},
                 id="other-tags-kept-unknown-fields-ignored"),
]


@pytest.mark.parametrize(("extra", "expected"), FIELD_CASES)
def test_decode_fields(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    req = chat({"role": "user", "content": "hi"}, **extra)
    assert {k: getattr(req, k) for k in expected} == expected


def test_decode_generate() -> None:
    req = generate(system="be brief", images=[PNG], stream=False, suffix="ignored", options={"num_predict": 5})
    assert req.messages == [{"role": "user", "content": [
        {"type": "image", "url": None, "media_type": "image/png", "data": PNG}, text("hi")]}]
    assert (req.system, req.stream, req.max_tokens, req.inbound) == ("be brief", False, 5, "ollama.generate")
    assert generate().stream is True


BAD_REQUESTS = [
    pytest.param(o.decode_chat, [], None, id="chat-body-not-object"),
    pytest.param(o.decode_chat, {"messages": [{"role": "user", "content": "x"}]}, "model", id="no-model"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": "hi"}, "messages", id="messages-not-array"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": ["hi"]}, "messages[0]", id="message-not-object"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role",
                 id="bad-role"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [{"role": "user", "content": 5}]},
                 "messages[0].content", id="content-not-string"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [{"role": "user", "content": "x", "images": [1]}]},
                 "messages[0].images[0]", id="image-not-string"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"a":1}'}}]}]},
        "messages[0].tool_calls[0].function.arguments", id="arguments-a-string"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [
        {"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]},
        "messages[0].tool_calls[0].function.name", id="call-without-name"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [{"role": "tool", "content": "x", "tool_name": 3}]},
                 "messages[0].tool_name", id="tool-name-not-string"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                 "tools": [{"type": "retrieval"}]}, "tools[0].type", id="tool-type"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                 "tools": [{"type": "function"}]}, "tools[0].function", id="tool-without-function"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "stream": "yes"}, "stream", id="stream-type"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "format": "yaml"}, "format", id="format"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "think": "hard"}, "think", id="think"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "options": []}, "options", id="options-type"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "options": {"temperature": "hot"}},
                 "options.temperature", id="temperature"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "options": {"num_predict": 1.5}},
                 "options.num_predict", id="num-predict"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "options": {"top_k": -3}},
                 "options.top_k", id="top-k"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "options": {"stop": "\n"}},
                 "options.stop", id="stop-not-array"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": "x", "options": {"seed": 2**60}},
                 "options.seed", id="seed-too-large"),
]


@pytest.mark.parametrize(("decode", "body", "param"), BAD_REQUESTS)
def test_decode_errors_name_the_field(decode: Any, body: Any, param: str | None) -> None:
    with pytest.raises(BadRequest) as e:
        decode(body, {})
    assert e.value.param == param, e.value.message
    if param:
        assert e.value.message.startswith(param), e.value.message


# --- answers ---------------------------------------------------------------------------------------------

TOOL_EVENTS: list[Event] = [ReasoningDelta("let me see"), ToolCallStart(0, "call_a", "get_weather"),
                            ToolCallDelta(0, '{"city":'), ToolCallDelta(0, '"Paris"}'), Finish("tool_calls"),
                            Usage(10, 7)]


def test_encode_chat() -> None:
    body = o.encode_response(TOOL_EVENTS, ctx(), True)
    assert body["message"] == {"role": "assistant", "content": "", "thinking": "let me see", "tool_calls": [
        {"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert (body["model"], body["done"], body["done_reason"]) == (MODEL, True, "stop")
    assert (body["prompt_eval_count"], body["eval_count"]) == (10, 7)
    r = ChatResponse(**body)  # the client's own type parses it
    assert r.message.tool_calls and r.message.tool_calls[0].function.arguments == {"city": "Paris"}
    assert r.created_at and r.created_at.endswith("Z") and r.total_duration is not None


def test_encode_generate() -> None:
    body = o.encode_response([TextDelta("Hel"), TextDelta("lo"), Finish("length"), Usage(3, 2)], ctx(), False)
    r = GenerateResponse(**body)
    assert (r.response, r.done, r.done_reason, r.prompt_eval_count, r.eval_count) == ("Hello", True, "length", 3, 2)
    assert "message" not in body and "thinking" not in body


def lines(out: bytes) -> list[dict[str, Any]]:
    assert out.endswith(b"\n") and b"\n\n" not in out
    return [orjson.loads(line) for line in out.splitlines()]


def stream(events: list[Event], chat_: bool) -> list[dict[str, Any]]:
    enc = o.StreamEncoder(ctx(), chat_)
    return lines(enc.start() + b"".join(enc.feed(e) for e in events) + enc.finish())


def test_chat_stream() -> None:
    got = stream([TextDelta("Hi"), TextDelta(""), TextDelta(" there", choice=1), *TOOL_EVENTS], True)
    assert [ChatResponse(**g).message.content for g in got] == ["Hi", "", "", ""]
    assert got[0]["done"] is False and got[0]["model"] == MODEL and got[0]["created_at"].endswith("Z")
    assert got[1]["message"]["thinking"] == "let me see"
    assert got[2]["message"]["tool_calls"] == [
        {"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]
    last = got[-1]
    assert (last["done"], last["done_reason"], last["prompt_eval_count"], last["eval_count"]) == (True, "stop", 10, 7)
    assert {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"} <= set(last)


def test_generate_stream() -> None:
    got = stream([ReasoningDelta("hm"), TextDelta("a"), TextDelta("b"), ToolCallStart(0, "c", "f"), Usage(1, 2)],
                 False)
    parsed = [GenerateResponse(**g) for g in got]
    assert [(p.response, p.thinking, p.done) for p in parsed] == [
        ("", "hm", False), ("a", None, False), ("b", None, False), ("", None, True)]
    assert parsed[-1].eval_count == 2


def test_stream_error_line_ends_the_stream() -> None:
    enc = o.StreamEncoder(ctx(), True)
    out = enc.feed(TextDelta("a")) + enc.feed(ToolCallStart(0, "c", "f")) + enc.feed(ToolCallDelta(0, "{}"))
    out += enc.feed(StreamError(502, "bad_gateway", "upstream connection reset mid-stream"))
    assert enc.feed(TextDelta("late")) == b"" and enc.finish() == b""
    got = lines(out)
    assert got[1]["message"]["tool_calls"][0]["function"]["name"] == "f"  # the complete call went out first
    assert got[-1] == {"error": "upstream connection reset mid-stream"}


# --- the family ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("err", [GatewayError("not_found", "model 'x' not found"), BadRequest("prompt: nope", "prompt"),
                                 GatewayError("rate_limit", "slow down", retry_after=3)])
def test_error_body_is_the_message_alone(err: GatewayError) -> None:
    assert o.FAMILY.error_body(err) == {"error": err.message}


def test_tags_and_show_parse_as_the_client_types() -> None:
    entries = [ModelEntry("gpt-4o", "gemini", 1700000000), ModelEntry("claude-x", "anthropic", 1700000000)]
    tags = ListResponse(**o.FAMILY.models_list(entries))
    assert [m.model for m in tags.models] == ["gpt-4o", "claude-x"]
    assert tags.models[0].modified_at is not None and tags.models[0].digest
    show = ShowResponse(**o.FAMILY.model_info(entries[0]))
    assert show.capabilities and "tools" in show.capabilities and show.modelinfo is not None
    assert o.FAMILY.path_prefixes == ("/api/",)


@pytest.mark.parametrize(("decode", "body", "answer"), [
    pytest.param(o.decode_generate, {"model": MODEL}, {"response": ""}, id="generate-no-prompt"),
    pytest.param(o.decode_generate, {"model": MODEL, "prompt": ""}, {"response": ""}, id="generate-empty-prompt"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": []}, {"message": {"role": "assistant", "content": ""}},
                 id="chat-no-messages"),
    pytest.param(o.decode_chat, {"model": MODEL}, {"message": {"role": "assistant", "content": ""}},
                 id="chat-messages-absent"),
    pytest.param(o.decode_chat, {"model": MODEL, "messages": [{"role": "system", "content": "s"}]},
                 {"message": {"role": "assistant", "content": ""}}, id="chat-system-only"),
])
@pytest.mark.parametrize("keep_alive", [None, 0, "5m"])
def test_a_request_with_nothing_to_ask_loads_the_model(decode: Any, body: dict[str, Any], answer: dict[str, Any],
                                                       keep_alive: Any) -> None:
    req = decode({**body, **({} if keep_alive is None else {"keep_alive": keep_alive})}, {})
    req.inbound = o.CHAT_NAME if decode is o.decode_chat else o.GENERATE_NAME  # as the engine sets it
    got = o.load_answer(req)
    assert got is not None and got["created_at"].endswith("Z")
    want = "unload" if keep_alive == 0 else "load"
    assert {k: got[k] for k in ("model", "done", "done_reason", *answer)} == {
        "model": MODEL, "done": True, "done_reason": want, **answer}


def test_a_request_with_something_to_ask_is_not_answered_locally() -> None:
    assert o.load_answer(o.decode_generate({"model": MODEL, "prompt": "hi"}, {})) is None
    assert o.load_answer(o.decode_chat({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, {})) is None


@pytest.mark.parametrize("chat_", [True, False], ids=["chat", "generate"])
def test_durations_count_from_when_the_request_arrived(chat_: bool) -> None:
    started = ResponseContext("x", MODEL, 1700000000, CanonicalRequest(MODEL, []), started=time.monotonic() - 2.0)
    body = o.encode_response([TextDelta("a"), Finish("stop"), Usage(1, 1)], started, chat_)
    enc = o.StreamEncoder(started, chat_)
    last = lines(enc.start() + enc.feed(TextDelta("a")) + enc.finish())[-1]
    for done in (body, last):
        assert 2.0e9 <= done["total_duration"] < 3.0e9, done
