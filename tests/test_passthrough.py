"""Same-dialect passthrough: the client's body reaches the upstream untouched but for the model."""

from __future__ import annotations

from tests.conftest import Harness


async def test_openai_chat_to_openai_upstream_is_untouched(gw: Harness) -> None:
    body = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi", "name": "bob"}],
            "logit_bias": {"50256": -100}, "x_vendor_field": {"a": [1, 2]}, "prediction": {"type": "content",
                                                                                          "content": "x"}}
    status, doc, headers = await gw.post_json("/v1/chat/completions", body)
    assert status == 200, doc
    sent = (await gw.sim_requests())[-1]["body"]
    assert sent == {**body, "model": "gpt-5"}
    assert headers["X-Mapped-Model"] == "gpt-5"


async def test_anthropic_to_anthropic_keeps_cache_control_signatures_and_beta(gw: Harness) -> None:
    body = {"model": "claude-sonnet-4", "max_tokens": 200,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig-abc"},
                    {"type": "text", "text": "a"}]},
                {"role": "user", "content": [{"type": "text", "text": "again",
                                              "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
            "context_management": {"edits": []}}
    status, doc, _ = await gw.post_json("/v1/messages", body, headers={
        "anthropic-version": "2023-06-01", "anthropic-beta": "context-management-2025-06-27"})
    assert status == 200, doc
    sent = (await gw.sim_requests())[-1]["body"]
    assert sent == body  # the model name maps to itself here


async def test_gemini_to_gemini_is_untouched(gw: Harness) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "cachedContent": "cachedContents/abc"}
    status, doc, _ = await gw.post_json("/v1beta/models/gemini-2.5-flash:generateContent", body)
    assert status == 200, doc
    assert (await gw.sim_requests())[-1]["body"] == body


async def test_cross_dialect_is_converted_not_passed_through(gw: Harness) -> None:
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}], "x_vendor_field": 1}
    status, doc, _ = await gw.post_json("/v1/chat/completions", body)
    assert status == 200, doc
    sent = (await gw.sim_requests())[-1]["body"]
    assert "x_vendor_field" not in sent and sent["max_tokens"] > 0
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}] or \
        sent["messages"] == [{"role": "user", "content": "hi"}]
