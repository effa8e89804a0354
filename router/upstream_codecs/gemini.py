"""Upstream Gemini ``GenerateContentResponse`` (JSON or ``alt=sse`` chunks) → canonical events.

Raises ``ValueError`` on malformed upstream data. Mapping:

- ``text`` parts → TextDelta; ``thought: true`` parts → ReasoningDelta. A ``thoughtSignature``
  becomes a ReasoningDelta's ``signature``; on a non-thought part (a ``functionCall`` or the last
  text part) it is emitted as an empty-text ReasoningDelta just before that part, so an encoder
  that replays thinking blocks puts it back in front of the call it belongs to.
- ``functionCall`` → ToolCallStart (``functionCall.id`` or a synthesized ``call_<hex>``) plus one
  ToolCallDelta with the compact JSON of ``args``. Tool calls are numbered per candidate across
  chunks.
- ``finishReason``: STOP → stop (tool_calls when the candidate made a function call), MAX_TOKENS →
  length, safety-like reasons and a blocked prompt (``promptFeedback.blockReason``, no candidates)
  → content_filter, anything else → stop.
- ``usageMetadata`` (cumulative; the last one wins) → one Usage, after every other event, when the
  upstream sent any.
- A top-level ``error`` object → StreamError.

Error bodies (:func:`error_details`): ``{"error": {"code", "message", "status", "details"}}``, wrapped
in an array by the non-SSE stream endpoint (and by Google's OpenAI-compatible endpoint). Of the
``google.rpc`` details, ``RetryInfo.retryDelay`` is a retry hint and ``QuotaFailure`` means the
model's quota is spent (another model may still have some).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from router.canonical import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    new_call_id,
)
from router.codecs import UpstreamCodec
from router.errors import kind_for_status
from router.failures import CONTEXT_LENGTH, ErrorDetails, error_message, note_problem, usable_delay
from router.filters.gemini import FILTERS

_FINISH: Mapping[str, str] = MappingProxyType(
    {
        "STOP": "stop",
        "MAX_TOKENS": "length",
        "SAFETY": "content_filter",
        "RECITATION": "content_filter",
        "BLOCKLIST": "content_filter",
        "PROHIBITED_CONTENT": "content_filter",
        "SPII": "content_filter",
        "IMAGE_SAFETY": "content_filter",
    }
)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"malformed Gemini response: {what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"malformed Gemini response: {what} is not an array")
    return value


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"malformed Gemini response: {key} is not a string")
    return value


def decode_usage(meta: Any) -> Usage | None:
    """``usageMetadata`` → Usage; output counts thoughts too (canonical semantics)."""
    if not isinstance(meta, dict):
        return None
    thoughts = _int(meta.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=_int(meta.get("promptTokenCount")),
        output_tokens=_int(meta.get("candidatesTokenCount")) + thoughts,
        cached_tokens=_int(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def error_event(error: Any) -> StreamError:
    """A Google ``{"error": {"code", "message", "status"}}`` object → StreamError."""
    err = error if isinstance(error, dict) else {"message": error}
    status = _int(err.get("code")) or 500
    message = err.get("message")
    return StreamError(
        status=status,
        kind=kind_for_status(status),
        message=message if isinstance(message, str) else "upstream error",
    )


class _Candidate:
    """Per-candidate state: tool-call numbering and whether its finish was emitted."""

    __slots__ = ("calls", "finished")

    def __init__(self) -> None:
        self.calls = 0
        self.finished = False


class StreamDecoder:
    """Decodes one upstream Gemini SSE stream; each event's data is one GenerateContentResponse."""

    __slots__ = ("_usage", "_candidates", "_failed")

    def __init__(self) -> None:
        # the latest chunk with a usageMetadata, its usage (and the modelVersion beside it) decoded once at finish()
        self._usage: dict[str, Any] | None = None
        self._candidates: dict[int, _Candidate] = {}
        self._failed = False

    def feed(self, event: str | None, data: bytes) -> list[Event]:
        if not data.strip() or data.strip() == b"[DONE]":
            return []
        return self.feed_object(orjson.loads(data))

    def feed_object(self, body: Any) -> list[Event]:
        """One already-parsed GenerateContentResponse."""
        chunk = _obj(body, "the response")
        fast = self._plain_text(chunk)
        if fast is not None:
            return fast
        if chunk.get("error") is not None:
            self._failed = True
            return [error_event(chunk["error"])]
        if "usageMetadata" in chunk:
            self._usage = chunk if chunk["usageMetadata"] is not None else self._usage
        out: list[Event] = []
        candidates = _list(chunk.get("candidates"), "candidates")
        for position, cand in enumerate(candidates):
            self._candidate(_obj(cand, "a candidate"), position, out)
        if not candidates:
            self._blocked_prompt(chunk.get("promptFeedback"), out)
        return out

    def _plain_text(self, chunk: dict[str, Any]) -> list[Event] | None:
        """The common chunk (one candidate, text parts only) without the general walk; None when
        the chunk has anything else in it (tool calls, thoughts, several candidates, an error)."""
        cands = chunk.get("candidates")
        if type(cands) is not list or len(cands) != 1 or "error" in chunk:
            return None
        cand = cands[0]
        if type(cand) is not dict or cand.get("index", 0) != 0:
            return None
        content = cand.get("content")
        parts = content.get("parts") if type(content) is dict else None
        reason = cand.get("finishReason")
        if type(parts) is not list or (reason is not None and type(reason) is not str):
            return None
        out: list[Event] = []
        for part in parts:
            if type(part) is not dict or len(part) != 1 or type(part.get("text")) is not str:
                return None
            if part["text"]:
                out.append(TextDelta(part["text"]))
        state = self._state(0)
        if reason is not None and not state.finished:
            state.finished = True
            out.append(Finish("tool_calls" if reason == "STOP" and state.calls else _FINISH.get(reason, "stop")))
        if "usageMetadata" in chunk and chunk["usageMetadata"] is not None:
            self._usage = chunk
        return out

    def finish(self) -> list[Event]:
        """The last usage seen, once, after every other event (nothing after an error)."""
        last, self._usage = self._usage, None
        if last is None or self._failed:
            return []
        usage = decode_usage(last["usageMetadata"])
        if usage is None:
            return []
        model = last.get("modelVersion")  # the answering model's version, beside its usage
        usage.model = model if isinstance(model, str) else ""
        return [usage]

    def _state(self, c: int) -> _Candidate:
        state = self._candidates.get(c)
        if state is None:
            state = self._candidates[c] = _Candidate()
        return state

    def _blocked_prompt(self, feedback: Any, out: list[Event]) -> None:
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            state = self._state(0)
            if not state.finished:
                state.finished = True
                out.append(Finish("content_filter", choice=0))

    def _candidate(self, cand: dict[str, Any], position: int, out: list[Event]) -> None:
        index = cand.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError("malformed Gemini response: candidate index is not an integer")
        state = self._state(index)
        content = cand.get("content")
        if content is not None:
            for part in _list(_obj(content, "content").get("parts"), "parts"):
                self._part(_obj(part, "a part"), index, state, out)
        reason = cand.get("finishReason")
        if reason is not None and not state.finished:
            if not isinstance(reason, str):
                raise ValueError("malformed Gemini response: finishReason is not a string")
            state.finished = True
            mapped = _FINISH.get(reason, "stop")
            if mapped == "stop" and reason == "STOP" and state.calls:
                mapped = "tool_calls"
            out.append(Finish(mapped, choice=index))

    def _part(self, part: dict[str, Any], c: int, state: _Candidate, out: list[Event]) -> None:
        signature = _str(part, "thoughtSignature") or None
        text = _str(part, "text")
        if part.get("thought") is True:
            if text or signature:
                out.append(ReasoningDelta(text, signature=signature, choice=c))
            return
        if signature:
            out.append(ReasoningDelta("", signature=signature, choice=c))
        if text:
            out.append(TextDelta(text, choice=c))
        call = part.get("functionCall")
        if call is not None:
            self._call(_obj(call, "functionCall"), c, state, out)

    def _call(self, call: dict[str, Any], c: int, state: _Candidate, out: list[Event]) -> None:
        name = _str(call, "name")
        if not name:
            raise ValueError("malformed Gemini response: functionCall has no name")
        args = call.get("args")
        args = {} if args is None else _obj(args, "functionCall.args")
        call_id = _str(call, "id") or new_call_id()
        index = state.calls
        state.calls += 1
        out.append(ToolCallStart(index, call_id, name, choice=c))
        out.append(ToolCallDelta(index, orjson.dumps(args).decode(), choice=c))


def decode_response(body: bytes | str | dict[str, Any]) -> list[Event]:
    """A complete GenerateContentResponse → events (usage, when present, last).

    A JSON array of responses (``streamGenerateContent`` without ``alt=sse``) is accepted too.
    """
    data = body if isinstance(body, (dict, list)) else orjson.loads(body)
    decoder = StreamDecoder()
    out: list[Event] = []
    for chunk in data if isinstance(data, list) else [data]:
        out.extend(decoder.feed_object(chunk))
    return out + decoder.finish()


# --- error bodies ------------------------------------------------------------------------------------
_RETRY_DELAY = re.compile(r"\A(\d+(?:\.\d+)?)s\Z")  # google.protobuf.Duration as JSON: "12s", "1.5s"


def error_details(doc: Any) -> ErrorDetails:
    """The message, ``RetryInfo`` delay and ``QuotaFailure`` scope of a Gemini error body; "exceeds the
    maximum number of tokens" is a context-length failure."""
    if isinstance(doc, list) and doc:
        doc = doc[0]
    message = error_message(doc)
    reason = CONTEXT_LENGTH if message is not None and "exceeds the maximum number of tokens" in message else None
    err = doc.get("error") if isinstance(doc, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    if not isinstance(details, list):
        return ErrorDetails(message, reason=reason)
    notes: list[str] = []
    retry_after = _retry_delay(details, notes)
    model_scoped = any(isinstance(d, dict) and str(d.get("@type", "")).endswith("QuotaFailure") for d in details)
    return ErrorDetails(message, retry_after, tuple(notes), model_scoped, reason)


def _retry_delay(details: list[Any], problems: list[str]) -> float | None:
    """The first usable ``RetryInfo.retryDelay`` among an error's details."""
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("RetryInfo"):
            text = str(d.get("retryDelay", ""))
            m = _RETRY_DELAY.match(text)
            if m:
                return usable_delay("retryDelay", m.group(1), float(m.group(1)), problems)
            note_problem(problems, "retryDelay", text, "is not a duration like '12s'")
    return None


# --- the upstream codec (router.registry lists it) -------------------------------------------------
CODEC = UpstreamCodec("gemini", decode_response, StreamDecoder, FILTERS, error_details=error_details)
