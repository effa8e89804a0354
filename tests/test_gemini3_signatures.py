"""Gemini 3 tool loops: thought signatures survive every client dialect's second turn.

The simulator validates signatures for ``gemini-3*`` models as the real API does (the first
functionCall of each step of the current turn needs the signature it issued, or a documented skip
value), so each loop here fails with HTTP 400 when a signature is lost on the way.
"""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from router.sim.gemini import THOUGHT_SIGNATURE
from tests.conftest import Harness

MODEL = "gemini-3-flash"
PROMPT = "What is the weather in Paris?"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
SKIP = "skip_thought_signature_validator"


def _openai(h: Harness) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-test", max_retries=0)


async def _chat_turn(c: openai.AsyncOpenAI, msgs: list[dict[str, Any]], stream: bool, **kw: Any) -> Any:
    if not stream:
        return (await c.chat.completions.create(model=MODEL, messages=msgs, tools=CHAT_TOOLS, **kw)).choices[0]
    async with c.chat.completions.stream(model=MODEL, messages=msgs, tools=CHAT_TOOLS, **kw) as s:
        async for _ in s:
            pass
        return (await s.get_final_completion()).choices[0]


async def _upstream_calls(h: Harness) -> list[dict[str, Any]]:
    """The model-turn functionCall parts of the last request the simulator received."""
    body = (await h.sim_requests())[-1]["body"]
    return [p for c in body["contents"] if c["role"] == "model" for p in c["parts"] if "functionCall" in p]


# --- OpenAI Chat: the signature rides in tool_calls[].extra_content.google.thought_signature -------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_chat_tool_loop_keeps_the_signature(gw: Harness, stream: bool) -> None:
    c = _openai(gw)
    msgs: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
    first = await _chat_turn(c, msgs, stream, tool_choice="required")
    call = first.message.tool_calls[0]
    assert first.finish_reason == "tool_calls"
    assert call.model_extra["extra_content"] == {"google": {"thought_signature": THOUGHT_SIGNATURE}}
    msgs += [first.message.model_dump(exclude_none=True),  # what the SDK docs do: the message as is
             {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    second = await _chat_turn(c, msgs, stream)
    await c.close()
    assert second.message.content.startswith("Tool said:") and "21" in second.message.content
    assert [p["thoughtSignature"] for p in await _upstream_calls(gw)] == [THOUGHT_SIGNATURE]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_chat_tool_loop_when_the_client_drops_the_signature(gw: Harness, stream: bool) -> None:
    c = _openai(gw)
    msgs: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
    first = await _chat_turn(c, msgs, stream, tool_choice="required")
    call = first.message.tool_calls[0]
    rebuilt = {"id": call.id, "type": "function",  # a client that keeps only the standard fields
               "function": {"name": call.function.name, "arguments": call.function.arguments}}
    msgs += [{"role": "assistant", "content": None, "tool_calls": [rebuilt]},
             {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    second = await _chat_turn(c, msgs, stream)
    await c.close()
    assert second.message.content.startswith("Tool said:")
    assert [p["thoughtSignature"] for p in await _upstream_calls(gw)] == [THOUGHT_SIGNATURE]


async def test_remembered_signatures_are_per_client_key(config_dir: Any) -> None:
    from tests.conftest import start_gateway

    auth = config_dir / "00-server.yaml"
    auth.write_text(auth.read_text().replace(
        '- {name: default, key: "${ROUTER_API_KEY:-}"}',
        '- {name: alice, key: sk-alice}\n    - {name: bob, key: sk-bob}').replace("mode: auto", "mode: strict"))
    h = await start_gateway(config_dir)
    try:
        alice = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-alice", max_retries=0)
        first = await _chat_turn(alice, [{"role": "user", "content": PROMPT}], False, tool_choice="required")
        call = first.message.tool_calls[0]
        history = [{"role": "user", "content": PROMPT},
                   {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function", "function": {
                       "name": call.function.name, "arguments": call.function.arguments}}]},
                   {"role": "tool", "tool_call_id": call.id, "content": "{}"}]
        bob = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-bob", max_retries=0)
        await _chat_turn(bob, history, False)  # bob cannot use alice's memory: the skip value goes up
        assert [p["thoughtSignature"] for p in await _upstream_calls(h)] == [SKIP]
        await _chat_turn(alice, history, False)
        assert [p["thoughtSignature"] for p in await _upstream_calls(h)] == [THOUGHT_SIGNATURE]
        await alice.close()
        await bob.close()
    finally:
        await h.close()


async def test_unknown_signature_sends_the_skip_value_and_logs_it(gw: Harness, caplog: Any) -> None:
    """History the gateway never saw (another model's calls, a restart): Gemini 3 gets the skip value."""
    c = _openai(gw)
    msgs = [{"role": "user", "content": PROMPT},
            {"role": "assistant", "tool_calls": [
                {"id": "call_elsewhere", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_second", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_elsewhere", "content": "{}"},
            {"role": "tool", "tool_call_id": "call_second", "content": "{}"}]
    with caplog.at_level(logging.INFO, logger="router.filters.gemini"):
        choice = await _chat_turn(c, msgs, False)
    await c.close()
    assert choice.message.content.startswith("Tool said:")
    # only the first call of the step needs one (parallel calls share the step's signature)
    assert ["thoughtSignature" in p and p["thoughtSignature"] for p in await _upstream_calls(gw)] == [SKIP, False]
    skips = [r for r in caplog.records if "skip_thought_signature_validator" in r.getMessage()]
    assert len(skips) == 1 and "gemini-3-flash" in skips[0].getMessage()


async def test_older_models_get_no_skip_value(gw: Harness) -> None:
    c = _openai(gw)
    msgs = [{"role": "user", "content": PROMPT},
            {"role": "assistant", "tool_calls": [{"id": "call_x", "type": "function",
                                                  "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_x", "content": "{}"}]
    r = await c.chat.completions.create(model="gemini-2.5-flash", messages=msgs, tools=CHAT_TOOLS)
    await c.close()
    assert r.choices[0].message.content.startswith("Tool said:")
    assert ["thoughtSignature" in p for p in await _upstream_calls(gw)] == [False]


# --- the other client dialects keep their signatures in their own fields ------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_responses_tool_loop(gw: Harness, stream: bool) -> None:
    c = _openai(gw)
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}]
    if stream:
        async with c.responses.stream(model=MODEL, input=PROMPT, tools=tools, tool_choice="required") as s:
            async for _ in s:
                pass
            r = await s.get_final_response()
    else:
        r = await c.responses.create(model=MODEL, input=PROMPT, tools=tools, tool_choice="required")
    call = next(o for o in r.output if o.type == "function_call")
    replay = [{"role": "user", "content": PROMPT}, *[o.model_dump(exclude_none=True) for o in r.output],
              {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}]
    r2 = await c.responses.create(model=MODEL, input=replay, tools=tools)
    chained = await c.responses.create(model=MODEL, previous_response_id=r.id, tools=tools, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 22}'}])
    await c.close()
    assert r2.output_text.startswith("Tool said:") and "22" in chained.output_text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_anthropic_tool_loop(gw: Harness, stream: bool) -> None:
    c = anthropic.AsyncAnthropic(base_url=gw.url, api_key="sk-test", max_retries=0)
    tools = [{"name": "get_weather", "input_schema": WEATHER}]
    msgs: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "tools": tools}
    if stream:
        async with c.messages.stream(messages=msgs, tool_choice={"type": "any"}, **kw) as s:
            m = await s.get_final_message()
    else:
        m = await c.messages.create(messages=msgs, tool_choice={"type": "any"}, **kw)
    use = next(b for b in m.content if b.type == "tool_use")
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": '{"temp": 21}'}]}]
    m2 = await c.messages.create(messages=msgs, **kw)
    await c.close()
    assert m2.content[0].text.startswith("Tool said:")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_gemini_native_tool_loop(gw: Harness, stream: bool) -> None:
    g = genai.Client(api_key="sk-test", http_options=gtypes.HttpOptions(base_url=gw.url))
    config = gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(
            name="get_weather", parameters_json_schema=WEATHER)])],
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True))
    chat = g.aio.chats.create(model=MODEL, config=config)
    if stream:
        calls = [fc async for chunk in await chat.send_message_stream(PROMPT) for fc in chunk.function_calls or []]
    else:
        calls = (await chat.send_message(PROMPT)).function_calls
    answer = gtypes.Part.from_function_response(name=calls[0].name, response={"temp": 21})
    r = await chat.send_message(answer)
    assert r.text.startswith("Tool said:")


async def test_simulator_rejects_a_lost_signature_like_the_real_api(gw: Harness) -> None:
    """The check the loops above pass: without the gateway's help a replayed call fails."""
    contents = [{"role": "user", "parts": [{"text": PROMPT}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}]
    url = f"{gw.sim_url}/v1beta/models/{MODEL}:generateContent"
    async with gw.session.post(url, json={"contents": contents}, headers={"x-goog-api-key": "k"}) as r:
        body = await r.json()
    assert r.status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["message"].startswith("Function call is missing a thought_signature in functionCall parts.")
    assert "`default_api:get_weather` , position 2." in body["error"]["message"]
