"""Dialect features that need the whole gateway: the Responses store, Anthropic errors, real-key switch."""

from __future__ import annotations

from pathlib import Path

import anthropic
import openai
import pytest

from router.sim import SimServer
from tests.conftest import Harness, start_gateway


def _oa(h: Harness) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk", max_retries=0)


async def test_previous_response_id_continues_the_conversation(gw: Harness) -> None:
    c = _oa(gw)
    first = await c.responses.create(model="gpt-4o", instructions="be brief", input="My name is Ada")
    second = await c.responses.create(model="gpt-4o", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    sent = (await gw.sim_requests())[-1]["body"]
    texts = [p.get("text", "") for turn in sent["contents"] for p in turn["parts"]]
    assert "My name is Ada" in texts and "What is my name?" in texts
    assert any(t.startswith("Echo: My name is Ada") for t in texts)  # the stored assistant reply
    assert sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    with pytest.raises(openai.NotFoundError):
        await c.responses.create(model="gpt-4o", input="x", previous_response_id="resp_unknown")
    unstored = await c.responses.create(model="gpt-4o", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        await c.responses.create(model="gpt-4o", input="x", previous_response_id=unstored.id)
    await c.close()


async def test_streamed_responses_are_stored_too(gw: Harness) -> None:
    c = _oa(gw)
    async with c.responses.stream(model="gpt-4o", input="Remember blue") as s:
        final = await s.get_final_response()
    await c.responses.create(model="gpt-4o", input="Which colour?", previous_response_id=final.id)
    texts = [p.get("text", "") for t in (await gw.sim_requests())[-1]["body"]["contents"] for p in t["parts"]]
    assert "Remember blue" in texts
    await c.close()


async def test_responses_incomplete_when_cut_by_max_tokens(gw: Harness) -> None:
    c = _oa(gw)
    r = await c.responses.create(model="gpt-4o", input="a long answer please", max_output_tokens=16)
    assert r.status in ("incomplete", "completed")
    r = await c.responses.create(model="gemini-2.5-flash", input="a long answer please", max_output_tokens=2)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    async with c.responses.stream(model="gpt-4o", input="a long answer please", max_output_tokens=2) as s:
        kinds = [ev.type async for ev in s]
    assert kinds[-1] == "response.incomplete"
    await c.close()


async def test_anthropic_overloaded_is_529_overloaded_error(gw: Harness) -> None:
    await gw.faults("*", {"status": 529, "times": -1})
    c = anthropic.AsyncAnthropic(base_url=gw.url, api_key="sk", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        await c.messages.create(model="claude-sonnet-4", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"
    await c.close()


async def test_a_gemini_key_switches_the_default_route_without_file_edits(config_dir: Path) -> None:
    async with SimServer(port=0) as real:  # stands in for generativelanguage.googleapis.com
        env = {"GEMINI_API_KEY": "AIza-real", "GEMINI_BASE_URL": real.url}
        h = await start_gateway(config_dir, env=env)
        try:
            status, _, headers = await h.post_json("/v1/chat/completions",
                                                   {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
            assert status == 200 and headers["X-Account-Email"] == "gemini-key-1"
            assert [r["key"] for r in real.requests()] == ["AIza-real"]
        finally:
            await h.close()
    h = await start_gateway(config_dir, env={"GEMINI_API_KEYS": "alice@x.com=k1,bob@x.com=k2"})
    try:
        snap = h.gateway.current
        assert [a.email for a in snap.provider("gemini").pool.accounts] == ["alice@x.com", "bob@x.com"]
    finally:
        await h.close()
