"""Prompt and completion content in the shapes the GenAI semantic conventions give them
(``gen_ai.system_instructions``, ``gen_ai.input.messages``, ``gen_ai.output.messages``, each a JSON
string on the span). Only with ``telemetry.record_content: true``: content is never recorded by default.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.canonical import CanonicalRequest, Event, aggregate

MAX_CHARS = 64 * 1024  # per attribute: backends cap attribute values, and a prompt can be megabytes


def content_attributes(req: CanonicalRequest | None, events: list[Event] | None) -> dict[str, str]:
    """The three content attributes of a request and its answer (those there is something for)."""
    out: dict[str, str] = {}
    if req is not None:
        if req.system:
            out["gen_ai.system_instructions"] = _json([{"type": "text", "content": req.system}])
        out["gen_ai.input.messages"] = _json([_message(m) for m in req.messages])
    if events:
        out["gen_ai.output.messages"] = _json(_output(events))
    return out


def _message(m: dict[str, Any]) -> dict[str, Any]:
    content = m.get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": str(content or "")}]
    return {"role": m.get("role", "user"), "parts": [_part(p) for p in parts if isinstance(p, dict)]}


def _part(p: dict[str, Any]) -> dict[str, Any]:
    kind = p.get("type")
    if kind == "text":
        return {"type": "text", "content": p.get("text", "")}
    if kind == "tool_call":
        return {"type": "tool_call", "id": p.get("id"), "name": p.get("name"), "arguments": _arguments(p)}
    if kind == "tool_result":
        return {"type": "tool_call_response", "id": p.get("tool_call_id"), "response": p.get("content")}
    if kind == "thinking":
        return {"type": "reasoning", "content": p.get("text", "")}
    if kind == "image":  # the bytes stay out: a URL, or that there was an inline image
        return {"type": "uri", "modality": "image", "uri": p["url"]} if p.get("url") else \
            {"type": "blob", "modality": "image", "mime_type": p.get("media_type"), "content": ""}
    return {"type": str(kind)}


def _arguments(p: dict[str, Any]) -> Any:
    text = p.get("arguments") or ""
    try:
        return orjson.loads(text)
    except ValueError:
        return text


def _output(events: list[Event]) -> list[dict[str, Any]]:
    messages = []
    for choice in aggregate(events).choices:
        parts: list[dict[str, Any]] = []
        if choice.reasoning:
            parts.append({"type": "reasoning", "content": choice.reasoning})
        if choice.text:
            parts.append({"type": "text", "content": choice.text})
        parts += [{"type": "tool_call", "id": c.id, "name": c.name, "arguments": _arguments({"arguments": c.arguments})}
                  for c in choice.tool_calls]
        messages.append({"role": "assistant", "parts": parts, "finish_reason": choice.finish_reason})
    return messages


def _json(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "...(truncated)"
