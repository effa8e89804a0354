"""The official openai SDK (sync and async) against gateway + simulator: chat, stream, tools, JSON mode."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.conftest import Harness

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}]
MODELS = ["gemini-2.5-flash", "gpt-5", "claude-sonnet-4"]  # gemini, openai and anthropic upstreams


def sync_client(h: Harness) -> openai.OpenAI:
    return openai.OpenAI(base_url=h.url + "/v1", api_key="sk-test", max_retries=0)


def async_client(h: Harness) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.mark.parametrize("model", MODELS)
async def test_sync_non_stream(gw: Harness, model: str) -> None:
    def call():  # the sync client blocks: run it off the loop that serves the gateway
        with sync_client(gw) as c:
            return c.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": "Hello there"}])

    raw = await asyncio.to_thread(call)
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == model
    assert r.choices[0].message.content.startswith("Echo: Hello there")
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert raw.headers["x-mapped-model"] == model
    assert raw.headers["x-account-email"].endswith("@simulator.local")


@pytest.mark.parametrize("model", MODELS)
async def test_sync_stream(gw: Harness, model: str) -> None:
    def call():
        with sync_client(gw) as c:
            stream = c.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True},
                                               messages=[{"role": "user", "content": "Stream me"}])
            return list(stream)

    chunks = await asyncio.to_thread(call)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("Echo: Stream me")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({ch.id for ch in chunks}) == 1
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


@pytest.mark.parametrize("model", MODELS)
async def test_async_tool_call_round_trip(gw: Harness, model: str) -> None:
    c = async_client(gw)
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = await c.chat.completions.create(model=model, messages=msgs, tools=TOOLS, tool_choice="required")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    assert "city" in json.loads(call.function.arguments)
    msgs += [choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    r2 = await c.chat.completions.create(model=model, messages=msgs, tools=TOOLS)
    assert r2.choices[0].message.content.startswith("Tool said:")
    assert "21" in r2.choices[0].message.content
    await c.close()


@pytest.mark.parametrize("model", MODELS)
async def test_async_stream_tool_call_accumulates(gw: Harness, model: str) -> None:
    c = async_client(gw)
    async with c.chat.completions.stream(model=model, tools=TOOLS, tool_choice="required",
                                         messages=[{"role": "user", "content": "weather?"}]) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"]
    await c.close()


@pytest.mark.parametrize("model", MODELS)
async def test_json_mode(gw: Harness, model: str) -> None:
    c = async_client(gw)
    r = await c.chat.completions.create(model=model, response_format={"type": "json_object"},
                                        messages=[{"role": "user", "content": "give json"}])
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    r = await c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "give json"}],
        response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema}})
    assert "echo" in json.loads(r.choices[0].message.content)
    await c.close()


async def test_max_tokens_gives_length(gw: Harness) -> None:
    c = async_client(gw)
    r = await c.chat.completions.create(model="gpt-4o", max_tokens=2,
                                        messages=[{"role": "user", "content": "a long answer please"}])
    assert r.choices[0].finish_reason == "length"
    await c.close()


async def test_sdk_errors_map_to_exceptions(gw: Harness) -> None:
    c = async_client(gw)
    with pytest.raises(openai.BadRequestError) as e:
        await c.chat.completions.create(model="gpt-4o", messages="not a list")  # type: ignore[arg-type]
    assert e.value.body["param"] == "messages"
    await gw.faults("*", {"status": 429, "retry_after": 1, "times": -1})
    with pytest.raises(openai.RateLimitError):
        await c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    await c.close()


async def test_gemini_request_shape(gw: Harness) -> None:
    """The template + filters build a proper Gemini body from an OpenAI request."""
    c = async_client(gw)
    await c.chat.completions.create(
        model="gpt-4o", temperature=0.3, max_completion_tokens=50, stop=["END"], seed=7,
        reasoning_effort="low", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "developer", "content": "sys"},
                  {"role": "user", "content": [{"type": "text", "text": "look"},
                                               {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    body = (await gw.sim_requests())[-1]["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert body["contents"][0]["role"] == "user"
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
    g = body["generationConfig"]
    assert g["temperature"] == 0.3 and g["maxOutputTokens"] == 50 and g["stopSequences"] == ["END"]
    assert g["seed"] == 7 and g["thinkingConfig"]["thinkingBudget"] > 0
    decl = body["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "get_weather" and "additionalProperties" not in decl["parameters"]
    assert body["toolConfig"]["functionCallingConfig"] == {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    await c.close()
