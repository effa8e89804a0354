"""Legacy OpenAI Completions (``POST /v1/completions``): request decoder, response encoders.

Mapping choices:
- ``prompt`` is a string or an array holding exactly one string; it becomes one user text message.
  Several prompts (batching) and token-id prompts are rejected with 400 (param ``prompt``).
- ``suffix``, ``logprobs``, ``best_of`` and the penalties are ignored (kept in ``raw`` for a
  same-family pass-through template); ``logprobs`` is always null in responses.
- ``echo: true`` prepends the prompt to each choice's text (non-stream), or sends it as the first
  frame of each choice (stream).
- ``max_tokens`` is passed through as is; absent stays ``None`` (the template decides a default).
- Reasoning and tool-call events are dropped; a ``tool_calls`` finish becomes ``stop``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from router.canonical import (
    CanonicalRequest,
    Event,
    Finish,
    ResponseContext,
    StreamError,
    TextDelta,
    Usage,
    aggregate,
)
from router.client_codecs._fields import OPENAI_CHAT as fields
from router.client_codecs._openai_common import common_params, require_model, require_object
from router.client_codecs.openai_chat import DONE, FAMILY, error_body, error_frame, usage_dict
from router.codecs import ClientCodec
from router.errors import BadRequest

NAME = "openai.completions"

__all__ = ["NAME", "decode_request", "encode_response", "StreamEncoder", "error_body"]

# legacy completions know no "tool_calls" finish reason
_FINISH: Mapping[str, str] = MappingProxyType(
    {"stop": "stop", "length": "length", "content_filter": "content_filter"}
)


def _prompt_error(message: str) -> BadRequest:
    return BadRequest(message, param="prompt")


def _prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        if prompt and all(isinstance(p, str) for p in prompt):
            raise _prompt_error("several prompts in one request are not supported")
        if prompt and all(isinstance(p, (int, list)) and not isinstance(p, bool) for p in prompt):
            raise _prompt_error("token-id prompts are not supported; send the prompt as text")
    if prompt is None:
        raise _prompt_error("'prompt' is required")
    raise _prompt_error("'prompt' must be a string or an array holding one string")


def decode_request(body: Any, params: Mapping[str, Any] | None = None) -> CanonicalRequest:
    """Decode a legacy completions body into a one-message canonical request."""
    body = require_object(body)
    model = require_model(body)
    prompt = _prompt(body)
    fields.opt_bool(body, "echo")
    return CanonicalRequest(
        model=model,
        messages=[{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        max_tokens=fields.opt_int(body, "max_tokens", minimum=1),
        raw=body,
        inbound=NAME,
        **common_params(body),
    )


def _echo_prefix(request: CanonicalRequest) -> str:
    """The prompt text when the client asked for ``echo``, else ""."""
    if request.raw.get("echo") is not True:
        return ""
    text: str = request.messages[0]["content"][0]["text"]  # decode_request put the prompt there
    return text


def encode_response(events: list[Event], ctx: ResponseContext) -> dict[str, Any]:
    """The text_completion object for a complete event sequence."""
    agg = aggregate(events)
    prefix = _echo_prefix(ctx.request)
    return {
        "id": ctx.id,
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [
            {
                "text": prefix + c.text,
                "index": c.index,
                "logprobs": None,
                "finish_reason": _FINISH.get(c.finish_reason or "stop", "stop"),
            }
            for c in agg.choices
        ],
        "usage": usage_dict(agg.usage),
    }


_TEXT_TAIL = b',"index":0,"logprobs":null,"finish_reason":null}]}\n\n'


class StreamEncoder:
    """Encodes canonical events as text_completion SSE frames for one response."""

    __slots__ = ("_head", "_text0", "_echo", "_include_usage", "_usage", "_started", "_finished")

    def __init__(self, ctx: ResponseContext):
        self._head = (
            b'data: {"id":'
            + orjson.dumps(ctx.id)
            + b',"object":"text_completion","created":'
            + orjson.dumps(ctx.created)
            + b',"model":'
            + orjson.dumps(ctx.model)
            + b',"choices":'
        )
        self._text0 = self._head + b'[{"text":'
        self._echo = _echo_prefix(ctx.request)
        self._include_usage = ctx.request.include_usage
        self._usage: Usage | None = None
        self._started: set[int] = set()
        self._finished: set[int] = set()

    def start(self) -> bytes:
        return b""

    def _chunk(self, choice: int, text: str, finish: str | None = None) -> bytes:
        entry = {"text": text, "index": choice, "logprobs": None, "finish_reason": finish}
        return self._head + orjson.dumps([entry]) + b"}\n\n"

    def _open(self, choice: int) -> bytes:
        if choice in self._started:
            return b""
        self._started.add(choice)
        return self._chunk(choice, self._echo) if self._echo else b""

    def feed(self, ev: Event) -> bytes:
        if type(ev) is TextDelta:
            if not ev.text:
                return b""
            c = ev.choice
            opened = self._open(c)
            if c == 0:
                return opened + self._text0 + orjson.dumps(ev.text) + _TEXT_TAIL
            return opened + self._chunk(c, ev.text)
        if type(ev) is Finish:
            return self._finish_choice(ev.choice, ev.reason)
        if type(ev) is Usage:
            self._usage = ev
            return b""
        if type(ev) is StreamError:
            return self.error(ev)
        return b""

    def _finish_choice(self, choice: int, reason: str) -> bytes:
        if choice in self._finished:
            return b""
        self._finished.add(choice)
        return self._open(choice) + self._chunk(choice, "", _FINISH.get(reason, "stop"))

    def finish(self) -> bytes:
        """Close unfinished choices, then the usage chunk (when asked for) and ``[DONE]``."""
        parts = []
        if not self._started:
            parts.append(self._finish_choice(0, "stop"))
        parts.extend(self._finish_choice(choice, "stop") for choice in sorted(self._started - self._finished))
        if self._include_usage:
            parts.append(self._head + b'[],"usage":' + orjson.dumps(usage_dict(self._usage)) + b"}\n\n")
        parts.append(DONE)
        return b"".join(parts)

    def error(self, err: StreamError) -> bytes:
        return error_frame(err)


CODEC = ClientCodec(NAME, FAMILY, decode_request, encode_response, StreamEncoder, id_prefix="cmpl-")
