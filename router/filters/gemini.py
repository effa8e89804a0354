"""Jinja filters: canonical request pieces → Gemini ``generateContent`` request pieces.

Each filter is a plain function of one canonical value (see :mod:`router.canonical`) and returns
plain JSON data, or ``None`` when the field should be left out. Templates compose them::

    contents: "{{ request.messages | gemini_contents(model) }}"
    tools: "{{ request.tools | gemini_tools }}"
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from router.errors import BadRequest
from router.filters.gemini_schema import gemini_schema

log = logging.getLogger("router.filters.gemini")

DEFAULT_IMAGE_MIME = "image/jpeg"
# Models that reject a replayed function call without its thought signature (Gemini 3 and later),
# and the value Google documents for calls whose signature is unknown (another model's history).
SIGNED_MODEL_PREFIXES = ("gemini-3",)
_SIGNED_NAMES = SIGNED_MODEL_PREFIXES + tuple("models/" + p for p in SIGNED_MODEL_PREFIXES)
SKIP_SIGNATURE = "skip_thought_signature_validator"

# reasoning effort → thinkingBudget (tokens); 0 turns thinking off.
EFFORT_BUDGETS: dict[str, int] = {
    "none": 0,
    "minimal": 0,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}

_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_JSON_FORMATS = ("json_object", "json_schema")


# --- contents ------------------------------------------------------------------------------------


def gemini_contents(messages: Any, model: Any = None) -> list[dict[str, Any]]:
    """Canonical messages → Gemini ``contents``.

    assistant → ``model``; user and tool → ``user`` (tool results as ``functionResponse`` parts);
    consecutive turns of the same role are merged; messages without content are dropped. For a
    Gemini 3 ``model`` (the upstream model name), a step of the current tool loop whose first
    ``functionCall`` has no known signature gets Google's documented skip value instead of a 400.
    """
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, msg in enumerate(messages or ()):
        if not isinstance(msg, dict):
            continue
        role = "model" if msg.get("role") == "assistant" else "user"
        parts = _message_parts(msg, i, call_names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if type(model) is str and model.startswith(_SIGNED_NAMES):
        _skip_unknown_signatures(contents, model)
    return contents


def _skip_unknown_signatures(contents: list[dict[str, Any]], model: str) -> None:
    """What Gemini 3 validates: in the current turn (after the last user turn with content of its
    own, not only function responses) the first functionCall part of each model step."""
    start = max((i for i, c in enumerate(contents)
                 if c["role"] == "user" and any("functionResponse" not in p for p in c["parts"])), default=-1)
    skipped = []
    for content in contents[start + 1:]:
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is not None and not first.get("thoughtSignature"):
            first["thoughtSignature"] = SKIP_SIGNATURE
            skipped.append(first["functionCall"]["name"])
    if skipped:  # function names are the client's: a few, cut short, keep the line bounded
        names = ", ".join(n[:64] for n in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        log.info("no thought signature known for %d replayed function call(s) (%s) to %s: sent %s",
                 len(skipped), names, model, SKIP_SIGNATURE)


def _content_list(msg: dict[str, Any]) -> list[dict[str, Any]]:
    content = msg.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        return [p for p in content if isinstance(p, dict)]
    return []


def _message_parts(msg: dict[str, Any], i: int, call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts = _content_list(msg)
    if msg.get("role") == "assistant":
        return _model_parts(parts, i, call_names)
    out: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type")
        if kind == "tool_result":
            out.append(_function_response(part, i, call_names))
        elif kind == "text" and part.get("text"):
            out.append({"text": part["text"]})
        elif kind == "image":
            out.append(_image_part(part, i))
    return out


def _model_parts(
    parts: list[dict[str, Any]], i: int, call_names: dict[str, str]
) -> list[dict[str, Any]]:
    """Assistant parts. A thinking signature goes on the next ``functionCall`` part when one
    follows (Gemini requires it there), else on the thought part itself or the next text part."""
    out: list[dict[str, Any]] = []
    pending_sig: str | None = None
    for j, part in enumerate(parts):
        kind = part.get("type")
        calls_follow = any(p.get("type") == "tool_call" for p in parts[j + 1 :])
        if kind == "thinking":
            sig = part.get("signature") or None
            text = part.get("text") or ""
            if text:
                gp: dict[str, Any] = {"text": text, "thought": True}
                if sig and not calls_follow:
                    gp["thoughtSignature"], sig = sig, None
                out.append(gp)
            pending_sig = sig or pending_sig
        elif kind == "tool_call":
            gp = {"functionCall": _function_call(part, i, call_names)}
            if pending_sig:
                gp["thoughtSignature"], pending_sig = pending_sig, None
            out.append(gp)
        elif kind == "text" and part.get("text"):
            gp = {"text": part["text"]}
            if pending_sig and not calls_follow:
                gp["thoughtSignature"], pending_sig = pending_sig, None
            out.append(gp)
        elif kind == "image":
            out.append(_image_part(part, i))
    return out


def _function_call(part: dict[str, Any], i: int, call_names: dict[str, str]) -> dict[str, Any]:
    name = part.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("tool call has no function name", param=f"messages[{i}].tool_calls")
    call_id = part.get("id")
    if isinstance(call_id, str) and call_id:
        call_names[call_id] = name
    raw = part.get("arguments")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        args: Any = {}
    else:
        args = _parse_json(raw) if isinstance(raw, str) else raw
    if not isinstance(args, dict):
        raise BadRequest(
            f"arguments of tool call {name!r} are not a JSON object",
            param=f"messages[{i}].tool_calls",
        )
    return {"name": name, "args": args}


def _function_response(
    part: dict[str, Any], i: int, call_names: dict[str, str]
) -> dict[str, Any]:
    call_id = part.get("tool_call_id")
    name = part.get("name") or call_names.get(call_id if isinstance(call_id, str) else "")
    if not isinstance(name, str) or not name:
        raise BadRequest(
            f"tool result {call_id!r} matches no earlier tool call, so its function name is unknown",
            param=f"messages[{i}].tool_call_id",
        )
    content = part.get("content")
    if not isinstance(content, str):
        content = "" if content is None else _dumps(content)
    if part.get("is_error"):
        response: dict[str, Any] = {"error": content}
    else:
        parsed = _parse_json(content) if content.lstrip().startswith("{") else None
        response = parsed if isinstance(parsed, dict) else {"result": content}
    return {"functionResponse": {"name": name, "response": response}}


def _image_part(part: dict[str, Any], i: int) -> dict[str, Any]:
    data = part.get("data")
    media_type = part.get("media_type")
    if isinstance(data, str) and data:
        return {"inlineData": {"mimeType": media_type or DEFAULT_IMAGE_MIME, "data": data}}
    url = part.get("url")
    if not isinstance(url, str) or not url:
        raise BadRequest("image part has neither data nor url", param=f"messages[{i}].content")
    if url.startswith("data:"):
        return _data_url(url, i)
    mime = media_type or mimetypes.guess_type(urlsplit(url).path)[0] or DEFAULT_IMAGE_MIME
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _data_url(url: str, i: int) -> dict[str, Any]:
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise BadRequest("image data URL must be base64 encoded", param=f"messages[{i}].content")
    mime = header[: -len(";base64")] or DEFAULT_IMAGE_MIME
    return {"inlineData": {"mimeType": mime, "data": data}}


def _parse_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


# --- the other request fields ---------------------------------------------------------------------


def gemini_system(system: Any) -> dict[str, Any] | None:
    """The system prompt → ``systemInstruction``."""
    if not isinstance(system, str) or not system:
        return None
    return {"parts": [{"text": system}]}


def gemini_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Canonical tools → ``[{"functionDeclarations": [...]}]`` with cleaned parameter schemas.

    A parameter schema that is an object without properties is left out: Gemini has no use for
    it and older model versions reject it.
    """
    decls: list[dict[str, Any]] = []
    for tool in tools or ():
        if not isinstance(tool, dict) or not tool.get("name"):
            continue
        decl: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            decl["description"] = tool["description"]
        params = gemini_schema(tool.get("parameters"))
        if params and not (params.get("type") == "object" and not params.get("properties")):
            decl["parameters"] = params
        decls.append(decl)
    return [{"functionDeclarations": decls}] if decls else None


def gemini_tool_config(tool_choice: Any) -> dict[str, Any] | None:
    """``auto|none|required|{"name": n}`` → ``{"functionCallingConfig": {...}}``."""
    if isinstance(tool_choice, str) and tool_choice in _TOOL_MODES:
        return {"functionCallingConfig": {"mode": _TOOL_MODES[tool_choice]}}
    if isinstance(tool_choice, dict) and isinstance(tool_choice.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [tool_choice["name"]]}}
    return None


def gemini_response_mime_type(response_format: Any) -> str | None:
    """``application/json`` for JSON response formats, else ``None``."""
    if isinstance(response_format, dict) and response_format.get("type") in _JSON_FORMATS:
        return "application/json"
    return None


def gemini_response_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON Schema for ``responseJsonSchema`` (full JSON Schema, so no clean-up)."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    schema = response_format.get("schema")
    return schema if isinstance(schema, dict) else None


def gemini_thinking_config(reasoning: Any) -> dict[str, Any] | None:
    """Canonical reasoning → ``thinkingConfig``.

    An explicit ``budget`` wins (``-1`` is Gemini's dynamic budget); otherwise ``effort`` maps to a
    budget: none/minimal → 0 (thinking off, no thoughts), low → 1024, medium → 8192,
    high → 24576. Thoughts are included whenever thinking is on. Unknown efforts → ``None``.
    """
    if not isinstance(reasoning, dict):
        return None
    budget = reasoning.get("budget")
    if not isinstance(budget, int) or isinstance(budget, bool):
        budget = EFFORT_BUDGETS.get(str(reasoning.get("effort") or "").lower())
    if budget is None:
        return None
    return {"thinkingBudget": budget, "includeThoughts": budget != 0}


def gemini_stop(stop: Any) -> list[str] | None:
    """Stop sequences as a list (a single string is wrapped), or ``None`` when there are none."""
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, (list, tuple)):
        seqs = [s for s in stop if isinstance(s, str) and s]
        return seqs or None
    return None


FILTERS: dict[str, Callable[..., Any]] = {
    "gemini_contents": gemini_contents,
    "gemini_system": gemini_system,
    "gemini_tools": gemini_tools,
    "gemini_schema": gemini_schema,
    "gemini_tool_config": gemini_tool_config,
    "gemini_response_mime_type": gemini_response_mime_type,
    "gemini_response_schema": gemini_response_schema,
    "gemini_thinking_config": gemini_thinking_config,
    "gemini_stop": gemini_stop,
}
