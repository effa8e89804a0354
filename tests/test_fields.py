"""router.client_codecs._fields: one set of field readers, worded as each client API words its errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from router.client_codecs._fields import ANTHROPIC, GEMINI, OPENAI_CHAT, OPENAI_RESPONSES, Fields
from router.errors import BadRequest

BIG = 2**53


def error(read: Callable[[], Any]) -> tuple[str, str | None]:
    with pytest.raises(BadRequest) as info:
        read()
    return str(info.value), info.value.param


@pytest.mark.parametrize(("fields", "read", "message", "param"), [
    (OPENAI_CHAT, lambda f: f.opt_bool({"include_usage": 1}, "include_usage", "stream_options"),
     "'include_usage' must be a boolean", "stream_options.include_usage"),
    (OPENAI_CHAT, lambda f: f.opt_int({"n": 0}, "n", minimum=1), "'n' must be at least 1", "n"),
    (OPENAI_CHAT, lambda f: f.opt_int({"n": 2.0}, "n"), "'n' must be an integer", "n"),
    (OPENAI_CHAT, lambda f: f.opt_int({"seed": -BIG}, "seed"),
     f"'seed' must be at most {BIG - 1} in magnitude", "seed"),
    (OPENAI_CHAT, lambda f: f.opt_number({"top_p": 2}, "top_p", low=0.0, high=1.0),
     "'top_p' must be between 0 and 1", "top_p"),
    (OPENAI_RESPONSES, lambda f: f.opt_obj({"format": []}, "format", "text"),
     "'text.format' must be an object", "text.format"),
    (OPENAI_RESPONSES, lambda f: f.req_str({"name": ""}, "name", "tool_choice", empty=False),
     "'tool_choice.name' is required and must be a string", "tool_choice.name"),
    (OPENAI_RESPONSES, lambda f: f.opt_int({"max_output_tokens": BIG}, "max_output_tokens", minimum=1),
     f"'max_output_tokens' must be at most {BIG - 1}", "max_output_tokens"),
    (ANTHROPIC, lambda f: f.req_str({}, "role", "messages.0"), "messages.0.role: field required", "messages.0.role"),
    (ANTHROPIC, lambda f: f.req_str({"role": 1}, "role", "messages.0"),
     "messages.0.role: expected a string, got number", "messages.0.role"),
    (ANTHROPIC, lambda f: f.opt_int({"top_k": -1}, "top_k", minimum=0), "top_k: must be >= 0", "top_k"),
    (ANTHROPIC, lambda f: f.str_list({"stop_sequences": ["a", 1]}, "stop_sequences"),
     "stop_sequences.1: expected a string, got number", "stop_sequences.1"),
    (GEMINI, lambda f: f.str_list({"stop_sequences": [None]}, "stopSequences", "generationConfig"),
     "generationConfig.stopSequences[0]: expected a string, got null", "generationConfig.stopSequences[0]"),
    (GEMINI, lambda f: f.opt_obj({"thinkingConfig": "x"}, "thinkingConfig", "generationConfig"),
     "generationConfig.thinkingConfig: expected an object, got string", "generationConfig.thinkingConfig"),
], ids=["chat-key-in-message", "chat-minimum", "chat-no-integral-float", "chat-magnitude", "chat-range",
        "responses-path-in-message", "responses-required", "responses-positive-limit", "anthropic-required",
        "anthropic-wrong-type", "anthropic-minimum", "anthropic-item", "gemini-item", "gemini-object"])
def test_each_api_words_its_errors(fields: Fields, read: Callable[[Fields], Any], message: str, param: str) -> None:
    assert error(lambda: read(fields)) == (message, param)


def test_values_the_apis_read_differently() -> None:
    assert ANTHROPIC.opt_int({"max_tokens": 8.0}, "max_tokens") == 8  # 8.0 is an integer to Anthropic and Gemini
    assert type(ANTHROPIC.opt_number({"t": 1}, "t")) is float
    assert type(GEMINI.opt_number({"t": 1}, "t")) is int  # Gemini keeps a number as sent
    assert GEMINI.opt_int({"max_output_tokens": 5}, "maxOutputTokens") == 5  # snake_case spelling accepted
    assert ANTHROPIC.opt_str({"a": None}, "a") is None  # null is absent everywhere
