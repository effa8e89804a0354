"""The bundled upstream simulator: pure planning, each dialect on the wire, faults, official SDKs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from router.sim import SimServer, create_app
from router.sim.exchange import Frame, cut_index
from router.sim.faults import FaultBook, parse_fault
from router.sim.gemini import THOUGHT_SIGNATURE
from router.sim.replies import Ask, ToolSpec, build_value, count_tokens, plan, split_text
from router.sim.state import SimOptions

GEM = "/v1beta/models/gemini-2.5-flash"
GEM_KEY = {"x-goog-api-key": "gk"}
OAI_KEY = {"Authorization": "Bearer ok"}
ANT_KEY = {"x-api-key": "ak", "anthropic-version": "2023-06-01"}
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                                   "days": {"type": "integer"}},
                  "required": ["city", "days"]}
OAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
             {"type": "function", "function": {"name": "get_time", "parameters": {
                 "type": "object", "properties": {"zone": {"type": "string"}}}}}]
ANT_TOOLS = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
GEM_TOOLS = [{"functionDeclarations": [
    {"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {
        "city": {"type": "STRING"}, "days": {"type": "INTEGER"}}, "required": ["city"]}},
    {"name": "get_time", "parameters": {"type": "OBJECT", "properties": {"zone": {"type": "STRING"}}}}]}]
FULL = "Echo: hello there This is a simulated reply from the bundled upstream."


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(chunks=3) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def gem_body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def oai_body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def ant_body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": text}], **extra}


async def post(http: aiohttp.ClientSession, url: str, body: Any,
               headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with http.post(url, data=orjson.dumps(body), headers=headers) as resp:
        return resp.status, resp.headers, orjson.loads(await resp.read())


async def raw(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]) -> bytes:
    async with http.post(url, data=orjson.dumps(body), headers=headers) as resp:
        assert resp.status == 200
        return await resp.read()


def frames(data: bytes, sep: bytes = b"\n\n") -> list[bytes]:
    assert data.endswith(sep)
    return data[: -len(sep)].split(sep)


def sse_json(data: bytes, sep: bytes = b"\n\n") -> list[Any]:
    out = []
    for frame in frames(data, sep):
        line = frame.split(b"\n")[-1]
        assert line.startswith(b"data: ")
        out.append(None if line == b"data: [DONE]" else orjson.loads(line[6:]))
    return out


async def add_faults(http: aiohttp.ClientSession, sim: SimServer, key: str, *faults: Any) -> Any:
    async with http.post(sim.url + "/_sim/faults", json={"key": key, "faults": list(faults)}) as resp:
        return resp.status, await resp.json()


# --- pure planning ------------------------------------------------------------------------------

def test_plan_echoes_deterministically() -> None:
    ask = Ask(user_text="hello there", prompt_text="be nice hello there")
    first, second = plan(ask), plan(ask)
    assert first == second
    assert first.text == FULL
    assert first.finish == "stop"
    assert (first.prompt_tokens, first.output_tokens) == (4, count_tokens(FULL))


def test_plan_snippet_is_capped_at_60_chars() -> None:
    reply = plan(Ask(user_text="x" * 200))
    assert reply.text.startswith("Echo: " + "x" * 60 + " This")


def test_plan_truncates_to_max_tokens() -> None:
    reply = plan(Ask(user_text="hello there", max_tokens=3))
    assert (reply.text, reply.finish, reply.output_tokens) == ("Echo: hello there", "length", 3)


def test_plan_stop_sequence_cuts_before_it() -> None:
    reply = plan(Ask(user_text="hello there", stop=("simulated",)))
    assert reply.text == "Echo: hello there This is a "
    assert (reply.finish, reply.stop_sequence) == ("stop_sequence", "simulated")


@pytest.mark.parametrize(("ask", "called"), [
    (Ask(user_text="hi", tools=(ToolSpec("f"),)), None),
    (Ask(user_text="What's the Weather?", tools=(ToolSpec("f"),)), "f"),
    (Ask(user_text="use a tool", tools=(ToolSpec("f"), ToolSpec("g"))), "f"),
    (Ask(user_text="hi", tools=(ToolSpec("f"), ToolSpec("g")), tool_mode="force"), "f"),
    (Ask(user_text="hi", tools=(ToolSpec("f"), ToolSpec("g")), tool_mode="force", forced_name="g"), "g"),
    (Ask(user_text="weather", tools=(ToolSpec("f"),), tool_mode="none"), None),
    (Ask(user_text="weather"), None),
    (Ask(user_text="weather", tools=(ToolSpec("f"),), tool_result="21C"), None),
], ids=["no-trigger", "weather-word", "tool-word", "forced", "forced-named", "choice-none",
        "no-tools", "after-result"])
def test_plan_tool_decision(ask: Ask, called: str | None) -> None:
    reply = plan(ask)
    assert (reply.tool.name if reply.tool else None) == called
    assert reply.finish == ("tool" if called else "stop")


def test_plan_answers_tool_result() -> None:
    reply = plan(Ask(user_text="weather", tools=(ToolSpec("f"),), tool_result='{"temp":21}'))
    assert reply.text == 'Tool said: {"temp":21}'


def test_plan_json_mode_gives_json_object() -> None:
    assert orjson.loads(plan(Ask(user_text="hi", json_mode=True)).text) == {"echo": "hi"}
    schema = {"type": "object", "properties": {"n": {"type": "number"}, "ok": {"type": "boolean"}}}
    assert orjson.loads(plan(Ask(json_mode=True, json_schema=schema)).text) == {"n": 1, "ok": True}


def test_plan_thoughts_are_counted() -> None:
    reply = plan(Ask(user_text="hi", thoughts=True))
    assert reply.thought == "Thinking about: hi"
    assert reply.thought_tokens == 3
    assert reply.total_tokens == reply.prompt_tokens + reply.output_tokens + 3


@pytest.mark.parametrize(("schema", "value"), [
    (WEATHER_SCHEMA, {"city": "Paris", "days": 1}),
    ({"type": "object", "properties": {"q": {"type": "string"}, "f": {"type": "boolean"}}},
     {"q": "test", "f": True}),
    ({"type": "OBJECT", "properties": {"location": {"type": "STRING"}, "x": {"type": "NUMBER"}},
      "required": ["location"]}, {"location": "Paris"}),
    ({"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}}}, {"unit": "c"}),
    ({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "integer"}}}},
     {"tags": [1]}),
    ({"type": "object", "properties": {"o": {"type": "object", "properties": {
        "town": {"type": ["string", "null"]}}}}}, {"o": {"town": "Paris"}}),
    ({"type": "object"}, {}),
], ids=["required", "all-when-none-required", "gemini-upper", "enum", "array", "nested-nullable",
        "no-properties"])
def test_build_value(schema: dict[str, Any], value: Any) -> None:
    assert build_value(schema) == value


def test_tool_without_schema_gets_empty_args() -> None:
    reply = plan(Ask(user_text="tool", tools=(ToolSpec("f"),)))
    assert reply.tool is not None and reply.tool.args == {} and reply.tool.arguments == "{}"


@pytest.mark.parametrize(("text", "parts", "count"), [
    (FULL, 3, 3), (FULL, 1, 1), ("ab", 5, 2), ("one two", 4, 4), ("", 3, 0), (" lead x", 2, 2),
])
def test_split_text_rejoins(text: str, parts: int, count: int) -> None:
    pieces = split_text(text, parts)
    assert "".join(pieces) == text
    assert len(pieces) == count
    assert all(pieces)


# --- faults, options, stream cut points -----------------------------------------------------------

@pytest.mark.parametrize("spec", [
    "x", {"kind": "boom"}, {"status": 200}, {"status": "429"}, {"status": 429, "times": 0},
    {"kind": "stall", "delay": -1}, {"status": 429, "retry_delay": 2}, {"kind": "reset", "after_chunks": "1"},
], ids=["not-object", "unknown-kind", "status-200", "status-str", "times-0", "neg-delay",
        "retry-delay-number", "after-chunks-str"])
def test_parse_fault_rejects(spec: Any) -> None:
    with pytest.raises(ValueError):
        parse_fault(spec)


def test_parse_fault_defaults() -> None:
    fault = parse_fault({"status": 429, "retry_after": 3})
    assert (fault.kind, fault.status, fault.retry_after, fault.times) == ("status", 429, 3.0, 1)
    assert parse_fault({"kind": "stall", "after_chunks": 2, "delay": 0.5}).delay == 0.5


def test_fault_book_order_times_and_fallback() -> None:
    book = FaultBook()
    book.add("a", [parse_fault({"status": 500, "times": 2}), parse_fault({"status": 503})])
    book.add("*", [parse_fault({"status": 429, "times": -1})])
    taken = [book.take("a").status for _ in range(5)]  # type: ignore[union-attr]
    assert taken == [500, 500, 503, 429, 429]
    assert book.take("other").status == 429  # type: ignore[union-attr]
    book.clear()
    assert book.take("a") is None


def test_options_from_headers() -> None:
    base = SimOptions()
    got = base.with_headers({"x-sim-latency": "0.5", "x-sim-chunks": "7", "x-sim-chunk-delay": "0.1"})
    assert got == SimOptions(latency=0.5, chunks=7, chunk_delay=0.1)
    assert base.with_headers({}) is base
    with pytest.raises(ValueError):
        base.with_headers({"x-sim-chunks": "many"})
    with pytest.raises(ValueError):
        SimOptions(chunks=0)


def test_cut_index() -> None:
    stream = [Frame(b"s"), Frame(b"a", True), Frame(b"b", True), Frame(b"end")]
    assert [cut_index(stream, n) for n in (0, 1, 2, 9)] == [1, 2, 3, 3]
    assert cut_index([Frame(b"s"), Frame(b"end")], 0) == 1


def test_create_app_options_validated() -> None:
    assert create_app(chunks=2) is not None
    with pytest.raises(ValueError):
        create_app(latency=-1)


# --- Gemini on the wire -------------------------------------------------------------------------

async def test_gemini_generate(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, headers, body = await post(http, sim.url + GEM + ":generateContent", gem_body(), GEM_KEY)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    candidate = body["candidates"][0]
    assert candidate["content"] == {"role": "model", "parts": [{"text": FULL}]}
    assert candidate["finishReason"] == "STOP"
    assert body["usageMetadata"] == {"promptTokenCount": 2, "candidatesTokenCount": 12,
                                     "totalTokenCount": 14}
    assert body["modelVersion"] == "gemini-2.5-flash" and body["responseId"]
    _, _, again = await post(http, sim.url + GEM + ":generateContent", gem_body(), GEM_KEY)
    assert again == body


async def test_gemini_stream_uses_crlf_framing(sim: SimServer, http: aiohttp.ClientSession) -> None:
    data = await raw(http, sim.url + GEM + ":streamGenerateContent?alt=sse", gem_body(), GEM_KEY)
    assert b"\r\n\r\n" in data and b"event:" not in data and b"[DONE]" not in data
    chunks = sse_json(data, b"\r\n\r\n")
    assert len(chunks) == 3
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == FULL
    assert all("usageMetadata" not in c and "finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 14
    assert {c["responseId"] for c in chunks} == {chunks[0]["responseId"]}


async def test_gemini_stream_thoughts_first(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = gem_body(generationConfig={"thinkingConfig": {"includeThoughts": True}})
    chunks = sse_json(await raw(http, sim.url + GEM + ":streamGenerateContent?alt=sse", body, GEM_KEY),
                      b"\r\n\r\n")
    assert chunks[0]["candidates"][0]["content"]["parts"] == [
        {"text": "Thinking about: hello there", "thought": True}]
    assert chunks[-1]["usageMetadata"]["thoughtsTokenCount"] == 4


async def test_gemini_stream_needs_alt_sse(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, sim.url + GEM + ":streamGenerateContent", gem_body(), GEM_KEY)
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"


async def test_gemini_auth(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, sim.url + GEM + ":generateContent", gem_body(), {})
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    status, _, _ = await post(http, sim.url + GEM + ":generateContent?key=qk", gem_body(), {})
    assert status == 200
    assert [r["key"] for r in sim.requests()] == [None, "qk"]


async def test_gemini_function_call(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = gem_body("hi", tools=GEM_TOOLS, toolConfig={"functionCallingConfig": {"mode": "ANY"}})
    _, _, out = await post(http, sim.url + GEM + ":generateContent", body, GEM_KEY)
    part = out["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert "id" not in part["functionCall"] and part["thoughtSignature"]
    assert out["candidates"][0]["finishReason"] == "STOP"
    named = gem_body("hi", tools=GEM_TOOLS, toolConfig={"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["get_time"]}})
    _, _, out = await post(http, sim.url + GEM + ":generateContent", named, GEM_KEY)
    assert out["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_time"


async def test_gemini_function_response_and_none_mode(sim: SimServer, http: aiohttp.ClientSession) -> None:
    contents = [{"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                                 "response": {"temp": 21}}}]}]
    _, _, out = await post(http, sim.url + GEM + ":generateContent",
                           {"contents": contents, "tools": GEM_TOOLS}, GEM_KEY)
    assert out["candidates"][0]["content"]["parts"] == [{"text": 'Tool said: {"temp":21}'}]
    none = gem_body("weather?", tools=GEM_TOOLS, toolConfig={"functionCallingConfig": {"mode": "NONE"}})
    _, _, out = await post(http, sim.url + GEM + ":generateContent", none, GEM_KEY)
    assert out["candidates"][0]["content"]["parts"][0]["text"].startswith("Echo: weather?")


async def test_gemini_json_and_max_tokens(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = gem_body(generationConfig={"responseMimeType": "application/json"})
    _, _, out = await post(http, sim.url + GEM + ":generateContent", body, GEM_KEY)
    assert orjson.loads(out["candidates"][0]["content"]["parts"][0]["text"]) == {"echo": "hello there"}
    body = gem_body(generation_config={"max_output_tokens": 2})  # snake_case accepted too
    _, _, out = await post(http, sim.url + GEM + ":generateContent", body, GEM_KEY)
    assert out["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert out["candidates"][0]["content"]["parts"][0]["text"] == "Echo: hello"


def _loop(call_part: dict[str, Any], *more: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [call_part, *more]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}]


CALL = {"functionCall": {"name": "get_weather", "args": {}}}
SIGNATURE_CASES = [
    pytest.param(_loop(CALL), 400, "Function call is missing a thought_signature", id="missing"),
    pytest.param(_loop({**CALL, "thoughtSignature": "bm90IG91cnM="}), 400, "Corrupted thought signature.",
                 id="not-issued"),
    pytest.param(_loop({**CALL, "thoughtSignature": "%%%"}), 400, "Corrupted thought signature.", id="not-base64"),
    pytest.param(_loop({**CALL, "thoughtSignature": THOUGHT_SIGNATURE}, CALL), 200, None,
                 id="issued-parallel-calls-need-only-the-first"),
    pytest.param(_loop({**CALL, "thought_signature": "skip_thought_signature_validator"}), 200, None,
                 id="skip-value-snake-case"),
    pytest.param(_loop({**CALL, "thoughtSignature": "skip/thought/signature/validator"}), 200, None,
                 id="skip-value-standard-base64"),
    pytest.param(_loop({**CALL, "thoughtSignature": "context_engineering_is_the_way_to_go"}), 200, None,
                 id="other-documented-value"),
    pytest.param(_loop(CALL) + [{"role": "model", "parts": [{"text": "It is 21C."}]},
                                {"role": "user", "parts": [{"text": "thanks"}]}], 200, None,
                 id="earlier-turns-not-validated"),
]


@pytest.mark.parametrize("contents,status,message", SIGNATURE_CASES)
async def test_gemini3_validates_thought_signatures(sim: SimServer, http: aiohttp.ClientSession,
                                                    contents: list[Any], status: int, message: str | None) -> None:
    url = sim.url + "/v1beta/models/gemini-3-flash:generateContent"
    got, _, out = await post(http, url, {"contents": contents, "tools": GEM_TOOLS}, GEM_KEY)
    assert got == status, out
    if message is not None:
        assert out["error"]["status"] == "INVALID_ARGUMENT" and out["error"]["message"].startswith(message)
    older, _, _ = await post(http, sim.url + GEM + ":generateContent", {"contents": contents, "tools": GEM_TOOLS},
                             GEM_KEY)
    assert older == 200  # Gemini 2.5 does not enforce them


async def test_gemini_count_tokens_and_models(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, _, out = await post(http, sim.url + GEM + ":countTokens", gem_body("a b c"), GEM_KEY)
    assert (status, out) == (200, {"totalTokens": 3})
    for path in ("/v1beta/models", "/v1/models"):
        async with http.get(sim.url + path, headers=GEM_KEY) as resp:
            models = (await resp.json())["models"]
        assert models[0]["name"] == "models/gemini-2.5-flash"
        assert {"displayName", "inputTokenLimit", "outputTokenLimit",
                "supportedGenerationMethods"} <= set(models[0])
    async with http.get(sim.url + "/v1beta/models/gemini-2.5-pro", headers=GEM_KEY) as resp:
        assert (await resp.json())["displayName"] == "Gemini 2.5 Pro"


async def test_gemini_bad_body(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + GEM + ":generateContent", data=b"{oops", headers=GEM_KEY) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == 400
    status, _, _ = await post(http, sim.url + GEM + ":generateContent", {"contents": []}, GEM_KEY)
    assert status == 400


# --- OpenAI on the wire -------------------------------------------------------------------------

async def test_openai_chat(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, headers, out = await post(http, sim.url + "/v1/chat/completions", oai_body(n=2), OAI_KEY)
    assert status == 200 and headers["x-request-id"]
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["choices"][0]["message"] == {"role": "assistant", "content": FULL, "refusal": None}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]


async def test_openai_stream_frames(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = oai_body(stream=True, stream_options={"include_usage": True})
    data = await raw(http, sim.url + "/v1/chat/completions", body, OAI_KEY)
    assert b"\r" not in data and b"event:" not in data and data.endswith(b"data: [DONE]\n\n")
    chunks = sse_json(data)
    assert chunks[-1] is None
    first, *texts, finish, usage = chunks[:-1]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert "".join(c["choices"][0]["delta"]["content"] for c in texts) == FULL and len(texts) == 3
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12
    assert len({c["id"] for c in chunks[:-1]}) == 1


async def test_openai_stream_tool_call_deltas(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = oai_body("hi", stream=True, tools=OAI_TOOLS,
                    tool_choice={"type": "function", "function": {"name": "get_time"}})
    chunks = sse_json(await raw(http, sim.url + "/v1/chat/completions", body, OAI_KEY))[:-1]
    head = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert head["id"].startswith("call_") and head["type"] == "function"
    assert head["function"] == {"name": "get_time", "arguments": ""} and head["index"] == 0
    fragments = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert all(set(f) == {"index", "function"} for f in fragments)
    assert orjson.loads("".join(f["function"]["arguments"] for f in fragments)) == {"zone": "test"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_openai_tool_result_json_and_length(sim: SimServer, http: aiohttp.ClientSession) -> None:
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    _, _, out = await post(http, sim.url + "/v1/chat/completions",
                           {"model": "gpt-4o", "messages": messages, "tools": OAI_TOOLS}, OAI_KEY)
    assert out["choices"][0]["message"]["content"] == "Tool said: sunny"
    _, _, out = await post(http, sim.url + "/v1/chat/completions",
                           oai_body(response_format={"type": "json_object"}), OAI_KEY)
    assert orjson.loads(out["choices"][0]["message"]["content"]) == {"echo": "hello there"}
    _, _, out = await post(http, sim.url + "/v1/chat/completions", oai_body(max_tokens=2), OAI_KEY)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 2


async def test_openai_auth_and_models(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, _, out = await post(http, sim.url + "/v1/chat/completions", oai_body(), {})
    assert status == 401 and out["error"]["code"] == "invalid_api_key"
    status, _, out = await post(http, sim.url + "/v1/chat/completions", {"messages": []}, OAI_KEY)
    assert status == 400 and out["error"]["type"] == "invalid_request_error"
    async with http.get(sim.url + "/v1/models", headers=OAI_KEY) as resp:
        listing = await resp.json()
    assert listing["object"] == "list" and listing["data"][0]["object"] == "model"
    async with http.get(sim.url + "/v1/models/gpt-4o", headers=OAI_KEY) as resp:
        assert (await resp.json())["id"] == "gpt-4o"


# --- Anthropic on the wire ----------------------------------------------------------------------

async def test_anthropic_message(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, headers, out = await post(http, sim.url + "/v1/messages", ant_body(), ANT_KEY)
    assert status == 200 and headers["request-id"]
    assert out["type"] == "message" and out["id"].startswith("msg_")
    assert out["content"] == [{"type": "text", "text": FULL}]
    assert (out["stop_reason"], out["stop_sequence"]) == ("end_turn", None)
    assert out["usage"] == {"input_tokens": 2, "output_tokens": 12,
                            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


async def test_anthropic_stream_events(sim: SimServer, http: aiohttp.ClientSession) -> None:
    data = await raw(http, sim.url + "/v1/messages", ant_body(stream=True), ANT_KEY)
    names = [f.split(b"\n")[0].removeprefix(b"event: ").decode() for f in frames(data)]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    events = sse_json(data)
    assert [e["type"] for e in events] == names
    assert "".join(e["delta"]["text"] for e in events[3:6]) == FULL
    assert events[-2]["usage"]["output_tokens"] == 12
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


async def test_anthropic_tool_use_stream(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = ant_body("hi", stream=True, tools=ANT_TOOLS, tool_choice={"type": "any"})
    events = sse_json(await raw(http, sim.url + "/v1/messages", body, ANT_KEY))
    start = events[2]["content_block"]
    assert start["type"] == "tool_use" and start["input"] == {} and start["id"].startswith("toolu_")
    partial = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta")
    assert orjson.loads(partial) == {"city": "Paris", "days": 1}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_tool_result_and_errors(sim: SimServer, http: aiohttp.ClientSession) -> None:
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather",
                                                   "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                              "content": [{"type": "text", "text": "rainy"}]}]}]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": messages, "tools": ANT_TOOLS}
    _, _, out = await post(http, sim.url + "/v1/messages", body, ANT_KEY)
    assert out["content"] == [{"type": "text", "text": "Tool said: rainy"}]
    status, _, out = await post(http, sim.url + "/v1/messages", {"model": "m", "messages": []}, ANT_KEY)
    assert status == 400 and out["error"]["type"] == "invalid_request_error"
    status, _, out = await post(http, sim.url + "/v1/messages", ant_body(), {})
    assert status == 401 and out["error"]["type"] == "authentication_error"


async def test_anthropic_count_tokens_and_models(sim: SimServer, http: aiohttp.ClientSession) -> None:
    body = {"model": "claude-sonnet-4-5", "system": "be brief",
            "messages": [{"role": "user", "content": "a b"}]}
    status, _, out = await post(http, sim.url + "/v1/messages/count_tokens", body, ANT_KEY)
    assert (status, out) == (200, {"input_tokens": 4})
    async with http.get(sim.url + "/v1/models", headers=ANT_KEY) as resp:
        listing = await resp.json()
    assert listing["has_more"] is False and listing["data"][0]["type"] == "model"
    assert listing["first_id"] == listing["data"][0]["id"]


# --- options -------------------------------------------------------------------------------------

async def test_chunk_header_and_timing(sim: SimServer, http: aiohttp.ClientSession) -> None:
    headers = {**OAI_KEY, "x-sim-chunks": "5", "x-sim-latency": "0.15", "x-sim-chunk-delay": "0.05"}
    started = time.monotonic()
    data = await raw(http, sim.url + "/v1/chat/completions", oai_body(stream=True), headers)
    elapsed = time.monotonic() - started
    texts = [c for c in sse_json(data)[1:-2]]
    assert len(texts) == 5
    assert 0.15 + 4 * 0.05 <= elapsed < 3.0
    status, _, out = await post(http, sim.url + "/v1/chat/completions", oai_body(),
                                {**OAI_KEY, "x-sim-chunks": "lots"})
    assert status == 400 and "x-sim-chunks" in out["error"]["message"]


async def test_app_default_chunks() -> None:
    async with SimServer(chunks=6) as server, aiohttp.ClientSession() as session:
        data = await raw(session, server.url + GEM + ":streamGenerateContent?alt=sse", gem_body(), GEM_KEY)
    assert len(frames(data, b"\r\n\r\n")) == 6


# --- faults --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "body", "headers", "shape"), [
    (GEM + ":generateContent", gem_body(), GEM_KEY,
     {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}),
    ("/v1/chat/completions", oai_body(), OAI_KEY,
     {"error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}),
    ("/v1/messages", ant_body(), ANT_KEY,
     {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"},
      "request_id": "req_sim"}),
], ids=["gemini", "openai", "anthropic"])
async def test_fault_429_retry_after(sim: SimServer, http: aiohttp.ClientSession, url: str, body: Any,
                                     headers: dict[str, str], shape: Any) -> None:
    key = next(iter(headers.values())).removeprefix("Bearer ")
    fault = {"status": 429, "retry_after": 3, "message": "slow down"}
    assert (await add_faults(http, sim, key, fault))[0] == 200
    status, resp_headers, out = await post(http, sim.url + url, body, headers)
    assert (status, resp_headers["Retry-After"], out) == (429, "3", shape)
    status, _, _ = await post(http, sim.url + url, body, headers)
    assert status == 200
    assert [(r["status"], r["fault"]) for r in sim.requests()] == [(429, "status"), (200, None)]


async def test_fault_gemini_retry_delay(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await add_faults(http, sim, "gk", {"status": 429, "retry_delay": "2s"})
    status, headers, out = await post(http, sim.url + GEM + ":generateContent", gem_body(), GEM_KEY)
    assert status == 429 and "Retry-After" not in headers
    assert out["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                        "retryDelay": "2s"}]


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (500, "api_error"), (502, "api_error"), (503, "api_error"), (529, "overloaded_error")])
async def test_fault_statuses_anthropic(sim: SimServer, http: aiohttp.ClientSession, status: int,
                                        kind: str) -> None:
    sim.add_faults("ak", {"status": status})
    got, _, out = await post(http, sim.url + "/v1/messages", ant_body(), ANT_KEY)
    assert (got, out["error"]["type"]) == (status, kind)


@pytest.mark.parametrize(("status", "name"), [(400, "INVALID_ARGUMENT"), (500, "INTERNAL"),
                                              (503, "UNAVAILABLE"), (403, "PERMISSION_DENIED")])
async def test_fault_statuses_gemini(sim: SimServer, http: aiohttp.ClientSession, status: int,
                                     name: str) -> None:
    sim.add_faults("gk", {"status": status})
    got, _, out = await post(http, sim.url + GEM + ":generateContent", gem_body(), GEM_KEY)
    assert (got, out["error"]["code"], out["error"]["status"]) == (status, status, name)


async def test_fault_times_forever_wildcard_and_clear(sim: SimServer, http: aiohttp.ClientSession) -> None:
    url = sim.url + "/v1/chat/completions"
    await add_faults(http, sim, "ok", {"status": 500, "times": 2})
    await add_faults(http, sim, "*", {"status": 503, "times": -1})
    statuses = [(await post(http, url, oai_body(), OAI_KEY))[0] for _ in range(4)]
    assert statuses == [500, 500, 503, 503]
    other = (await post(http, url, oai_body(), {"Authorization": "Bearer zz"}))[0]
    assert other == 503
    async with http.get(sim.url + "/_sim/faults") as resp:
        assert (await resp.json())["queued"] == {"*": 1}
    async with http.delete(sim.url + "/_sim/faults") as resp:
        assert (resp.status, await resp.json()) == (200, {"cleared": True})
    assert sim.requests() == []
    assert (await post(http, url, oai_body(), OAI_KEY))[0] == 200


async def test_fault_not_taken_by_model_listing(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.add_faults("ok", {"status": 500})
    async with http.get(sim.url + "/v1/models", headers=OAI_KEY) as resp:
        assert resp.status == 200
    assert (await post(http, sim.url + "/v1/chat/completions", oai_body(), OAI_KEY))[0] == 500


async def test_fault_control_validation(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, out = await add_faults(http, sim, "k", {"kind": "explode"})
    assert status == 400 and "unknown fault kind" in out["error"]
    async with http.post(sim.url + "/_sim/faults", data=b"nope") as resp:
        assert resp.status == 400
    async with http.post(sim.url + "/_sim/faults", json={"faults": []}) as resp:
        assert resp.status == 400


async def test_fault_reset_mid_stream(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.add_faults("gk", {"kind": "reset", "after_chunks": 1})
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(sim.url + GEM + ":streamGenerateContent?alt=sse",
                             data=orjson.dumps(gem_body()), headers=GEM_KEY) as resp:
            assert resp.status == 200
            async for piece in resp.content.iter_any():
                received += piece
    assert len(sse_json(received, b"\r\n\r\n")) == 1
    assert sim.requests()[0]["fault"] == "reset" and sim.requests()[0]["status"] == 200


async def test_fault_reset_openai_before_terminal_frames(sim: SimServer,
                                                         http: aiohttp.ClientSession) -> None:
    sim.add_faults("ok", {"kind": "reset", "after_chunks": 99})
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(sim.url + "/v1/chat/completions", data=orjson.dumps(oai_body(stream=True)),
                             headers=OAI_KEY) as resp:
            async for piece in resp.content.iter_any():
                received += piece
    assert b"[DONE]" not in received and b"finish_reason\":\"stop" not in received
    assert len(sse_json(received)) == 4  # role chunk + all three text chunks


async def test_fault_reset_non_stream(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.add_faults("ak", {"kind": "reset"})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, sim.url + "/v1/messages", ant_body(), ANT_KEY)
    assert sim.requests()[0]["status"] is None
    assert (await post(http, sim.url + "/v1/messages", ant_body(), ANT_KEY))[0] == 200


async def test_fault_slow_first_byte(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.add_faults("ok", {"kind": "slow_first_byte", "delay": 0.3})
    started = time.monotonic()
    status, _, _ = await post(http, sim.url + "/v1/chat/completions", oai_body(), OAI_KEY)
    assert status == 200 and time.monotonic() - started >= 0.3


@pytest.mark.parametrize(("url", "body", "headers", "sep", "good"), [
    (GEM + ":streamGenerateContent?alt=sse", gem_body(), GEM_KEY, b"\r\n\r\n", 2),
    ("/v1/chat/completions", oai_body(stream=True), OAI_KEY, b"\n\n", 3),
    ("/v1/messages", ant_body(stream=True), ANT_KEY, b"\n\n", 5),
], ids=["gemini", "openai", "anthropic"])
async def test_fault_malformed_stream(sim: SimServer, http: aiohttp.ClientSession, url: str, body: Any,
                                      headers: dict[str, str], sep: bytes, good: int) -> None:
    sim.add_faults("*", {"kind": "malformed", "after_chunks": 2})
    data = await raw(http, sim.url + url, body, headers)
    *ok, bad = frames(data, sep)
    assert bad == b"data: {not json"
    assert len(ok) == good
    assert sse_json(sep.join(ok) + sep, sep)


async def test_fault_malformed_non_stream(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.add_faults("gk", {"kind": "malformed"})
    async with http.post(sim.url + GEM + ":generateContent", data=orjson.dumps(gem_body()),
                         headers=GEM_KEY) as resp:
        assert resp.status == 200 and await resp.read() == b"{not json"


async def test_fault_stall_mid_stream(sim: SimServer, http: aiohttp.ClientSession) -> None:
    sim.add_faults("ak", {"kind": "stall", "after_chunks": 1, "delay": 0.3})
    stamps: list[float] = []
    started = time.monotonic()
    async with http.post(sim.url + "/v1/messages", data=orjson.dumps(ant_body(stream=True)),
                         headers=ANT_KEY) as resp:
        async for line in resp.content:
            if line.startswith(b"data: "):
                stamps.append(time.monotonic() - started)
    assert len(stamps) == 9  # the stream still completes
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) >= 0.25 and gaps.index(max(gaps)) == 3  # between text deltas 1 and 2


async def test_request_log(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await post(http, sim.url + "/v1/chat/completions", oai_body(), {"Authorization": "Bearer one"})
    await raw(http, sim.url + GEM + ":streamGenerateContent?alt=sse", gem_body(), {"x-goog-api-key": "two"})
    await post(http, sim.url + "/v1/messages", ant_body(), {"x-api-key": "three"})
    async with http.get(sim.url + "/_sim/requests") as resp:
        log = await resp.json()
    assert [(r["key"], r["path"], r["model"], r["stream"], r["status"]) for r in log] == [
        ("one", "/v1/chat/completions", "gpt-4o", False, 200),
        ("two", GEM + ":streamGenerateContent", "gemini-2.5-flash", True, 200),
        ("three", "/v1/messages", "claude-sonnet-4-5", False, 200)]
    assert log[0]["body"] == oai_body()
    assert [r["dialect"] for r in log] == ["openai", "gemini", "anthropic"]


# --- official SDKs -------------------------------------------------------------------------------

async def test_openai_sdk(sim: SimServer) -> None:
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)
    done = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello there"}])
    assert done.choices[0].message.content == FULL
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello there"}], stream=True,
        stream_options={"include_usage": True})
    pieces, usage = [], None
    async for chunk in stream:
        pieces += [c.delta.content or "" for c in chunk.choices]
        usage = chunk.usage or usage
    assert "".join(pieces) == FULL and usage is not None and usage.completion_tokens == 12
    async with client.chat.completions.stream(
            model="gpt-4o", messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=OAI_TOOLS) as tool_stream:  # type: ignore[arg-type]
        final = await tool_stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (call.function.name, orjson.loads(call.function.arguments)) == (  # type: ignore[union-attr]
        "get_weather", {"city": "Paris", "days": 1})
    assert final.choices[0].finish_reason == "tool_calls"
    sim.add_faults("k", {"status": 429, "retry_after": 1})
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    await client.close()


async def test_anthropic_sdk(sim: SimServer) -> None:
    client = anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0)
    msg = await client.messages.create(model="claude-sonnet-4-5", max_tokens=100,
                                       messages=[{"role": "user", "content": "hello there"}])
    assert msg.content[0].text == FULL and msg.stop_reason == "end_turn"  # type: ignore[union-attr]
    async with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
                                      messages=[{"role": "user", "content": "hello there"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == FULL and final.usage.output_tokens == 12
    async with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=100, tools=ANT_TOOLS,  # type: ignore[arg-type]
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "tool_use"]
    assert final.content[1].input == {"city": "Paris", "days": 1}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    sim.add_faults("k", {"status": 529})
    with pytest.raises(anthropic.InternalServerError) as info:
        await client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 529
    await client.close()


async def test_genai_sdk(sim: SimServer) -> None:
    client = genai.Client(api_key="k", http_options={"base_url": sim.url})
    config = genai_types.GenerateContentConfig(
        thinking_config=genai_types.ThinkingConfig(include_thoughts=True))
    resp = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hello there",
                                                    config=config)
    assert resp.text == FULL
    assert resp.usage_metadata.thoughts_token_count == 4  # type: ignore[union-attr]
    pieces = [c.text async for c in await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="hello there")]
    assert "".join(p or "" for p in pieces) == FULL and len(pieces) == 3
    tool = genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(
        name="get_weather", parameters_json_schema=WEATHER_SCHEMA)])
    resp = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents="weather in Paris?",
        config=genai_types.GenerateContentConfig(tools=[tool], automatic_function_calling=
                                                 genai_types.AutomaticFunctionCallingConfig(disable=True)))
    assert resp.function_calls[0].name == "get_weather"  # type: ignore[index]
    assert resp.function_calls[0].args == {"city": "Paris", "days": 1}  # type: ignore[index]
    sim.add_faults("k", {"status": 429, "retry_delay": "2s"})
    with pytest.raises(genai_errors.ClientError) as info:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert [r["path"] for r in sim.requests()][0].endswith("gemini-2.5-flash:generateContent")


async def test_sim_server_port_and_concurrency() -> None:
    async with SimServer(latency=0.2) as server, aiohttp.ClientSession() as session:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        started = time.monotonic()
        results = await asyncio.gather(*[post(session, server.url + "/v1/chat/completions",
                                              oai_body(f"n{i}"), OAI_KEY) for i in range(10)])
        assert time.monotonic() - started < 1.5  # serialised latency would take >= 2 s
        assert {r[0] for r in results} == {200}


async def test_run_serves_until_terminated() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", f"from router.sim import run; run({port}, chunks=2)"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    url = f"http://127.0.0.1:{port}{GEM}:streamGenerateContent?alt=sse"
                    data = await raw(session, url, gem_body(), GEM_KEY)
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("router.sim.run never started listening")
        assert len(frames(data, b"\r\n\r\n")) == 2
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
    assert f"listening on http://127.0.0.1:{port}".encode() in out
