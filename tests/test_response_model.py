"""The model an upstream's answer names, as the upstream codecs report it on the answer's Usage
(``Usage.model``: what traces show as ``gen_ai.response.model``), in whole answers and in streams;
"" where the wire format names none (Bedrock's Converse). It does not take part in Usage equality."""

from __future__ import annotations

import orjson

from router.canonical import Usage
from router.upstream_codecs import anthropic, bedrock, gemini, openai


def _usage(events: list[object]) -> Usage:
    [usage] = [e for e in events if isinstance(e, Usage)]
    return usage


def _stream(decoder: object, frames: list[tuple[str | None, dict[str, object]]]) -> list[object]:
    out: list[object] = []
    for name, payload in frames:
        out += decoder.feed(name, orjson.dumps(payload))  # type: ignore[attr-defined]  # each codec's decoder
    return out + decoder.finish()  # type: ignore[attr-defined]  # each codec's decoder


def test_openai() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2}
    whole = {"model": "gpt-4o-2024-08-06", "usage": usage,
             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}]}
    assert _usage(openai.decode_response(whole)).model == "gpt-4o-2024-08-06"
    chunk = {"model": "gpt-4o-2024-08-06", "object": "chat.completion.chunk"}
    events = _stream(openai.StreamDecoder(), [
        (None, {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}}]}),
        (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        (None, {**chunk, "choices": [], "usage": usage})])
    assert _usage(events).model == "gpt-4o-2024-08-06"
    assert _usage(openai.decode_response({**whole, "model": None})).model == ""  # names none


def test_anthropic() -> None:
    whole = {"type": "message", "model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "hi"}],
             "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 2}}
    assert _usage(anthropic.decode_response(whole)).model == "claude-sonnet-4-5-20250929"
    events = _stream(anthropic.StreamDecoder(), [
        ("message_start", {"type": "message_start", "message": {"model": "claude-sonnet-4-5-20250929",
                                                                 "usage": {"input_tokens": 5}}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 2}})])
    assert _usage(events).model == "claude-sonnet-4-5-20250929"


def test_gemini() -> None:
    chunk = {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
             "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
             "modelVersion": "gemini-2.5-flash-001"}
    assert _usage(gemini.decode_response(chunk)).model == "gemini-2.5-flash-001"
    events = _stream(gemini.StreamDecoder(), [
        (None, {"candidates": [{"content": {"parts": [{"text": "h"}]}}], "modelVersion": "gemini-2.5-flash-001"}),
        (None, chunk)])
    assert _usage(events).model == "gemini-2.5-flash-001"
    assert _usage(events) == Usage(5, 2)  # the model is not part of the counts' equality


def test_bedrock_names_no_model() -> None:
    whole = {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
             "usage": {"inputTokens": 5, "outputTokens": 2}}
    assert _usage(bedrock.decode_response(whole)).model == ""
