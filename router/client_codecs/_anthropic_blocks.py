"""Anthropic ``system`` and ``messages`` (content blocks) → canonical system string and messages.

Mapping decisions (see also the codec module docstring):

* ``tool_result`` blocks of a user turn become one canonical ``{"role": "tool"}`` message each,
  placed before a user message holding the turn's remaining parts; the tool name is looked up
  from the ``tool_use`` blocks seen earlier in the conversation (``None`` when unknown).
* ``tool_result`` content given as blocks: text blocks are joined with ``"\\n"``; image blocks are
  moved into the user message that follows the tool messages (canonical tool results are text).
* ``redacted_thinking {data}`` becomes a thinking part ``{"text": "", "signature": data,
  "redacted": True}``; the extra ``redacted`` key lets the Anthropic filter echo it back unchanged.
* ``document`` blocks with a plain-text source (``text`` or ``content``) become text parts; PDF,
  URL and file documents are rejected as unsupported.
* Server-tool blocks replayed in assistant turns (``server_tool_use``, ``*_tool_result``) are
  skipped: the gateway ignores server tools, so no upstream could make sense of them.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.client_codecs._fields import ANTHROPIC as fields
from router.client_codecs._fields import type_name
from router.errors import BadRequest

SYSTEM_JOIN = "\n\n"
TOOL_RESULT_JOIN = "\n"


def decode_system(body: dict[str, Any]) -> str | None:
    """``system`` as a string, or text blocks joined with a blank line; empty → None."""
    value = body.get("system")
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if not isinstance(value, list):
        raise BadRequest(f"system: expected a string or an array, got {type_name(value)}",
                         param="system")
    texts = []
    for i, item in enumerate(value):
        path = f"system.{i}"
        block = fields.obj(item, path)
        kind = fields.req_str(block, "type", path)
        if kind != "text":
            raise BadRequest(f"{path}.type: system blocks must be 'text', got {kind!r}",
                             param=f"{path}.type")
        texts.append(fields.req_str(block, "text", path))
    return SYSTEM_JOIN.join(texts) or None


def decode_messages(items: list[Any]) -> list[dict[str, Any]]:
    """The canonical message list for Anthropic ``messages``."""
    if not items:
        raise BadRequest("messages: at least one message is required", param="messages")
    names: dict[str, str] = {}  # tool_use id -> tool name, for tool_result blocks
    out: list[dict[str, Any]] = []
    last = len(items) - 1
    for i, raw in enumerate(items):
        path = f"messages.{i}"
        message = fields.obj(raw, path)
        role = fields.req_str(message, "role", path)
        if role not in ("user", "assistant"):
            raise BadRequest(f"{path}.role: must be 'user' or 'assistant', got {role!r}",
                             param=f"{path}.role")
        blocks = _blocks(message, path, allow_empty=(i == last and role == "assistant"))
        if role == "assistant":
            out.append({"role": "assistant", "content": _assistant_parts(blocks, path, names)})
        else:
            out.extend(_user_turn(blocks, path, names))
    return out


def _blocks(message: dict[str, Any], path: str, *, allow_empty: bool) -> list[dict[str, Any]]:
    content = message.get("content")
    cpath = f"{path}.content"
    if content is None:
        raise BadRequest(f"{cpath}: field required", param=cpath)
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"{cpath}: expected a string or an array, got {type_name(content)}",
                         param=cpath)
    if not content and not allow_empty:
        raise BadRequest(f"{cpath}: must not be empty", param=cpath)
    return [fields.obj(block, f"{cpath}.{j}") for j, block in enumerate(content)]


def _block_type(block: dict[str, Any], path: str) -> str:
    return fields.req_str(block, "type", path)


def _unsupported(kind: str, path: str, role: str) -> BadRequest:
    return BadRequest(f"{path}.type: content block type {kind!r} is not supported in a {role} "
                      "message", param=f"{path}.type")


def _assistant_parts(blocks: list[dict[str, Any]], path: str,
                     names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        bpath = f"{path}.content.{j}"
        kind = _block_type(block, bpath)
        if kind == "text":
            parts.append(_text_part(block, bpath))
        elif kind == "tool_use":
            part = _tool_call_part(block, bpath)
            names[part["id"]] = part["name"]
            parts.append(part)
        elif kind == "thinking":
            parts.append({"type": "thinking", "text": fields.req_str(block, "thinking", bpath),
                          "signature": fields.opt_str(block, "signature", bpath)})
        elif kind == "redacted_thinking":
            parts.append({"type": "thinking", "text": "", "redacted": True,
                          "signature": fields.req_str(block, "data", bpath)})
        elif kind == "server_tool_use" or kind.endswith("_tool_result"):
            continue
        else:
            raise _unsupported(kind, bpath, "assistant")
    return parts


def _user_turn(blocks: list[dict[str, Any]], path: str,
               names: dict[str, str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        bpath = f"{path}.content.{j}"
        kind = _block_type(block, bpath)
        if kind == "tool_result":
            result, images = _tool_result(block, bpath, names)
            messages.append({"role": "tool", "content": [result]})
            parts.extend(images)
        elif kind == "text":
            parts.append(_text_part(block, bpath))
        elif kind == "image":
            parts.append(_image_part(block, bpath))
        elif kind == "document":
            parts.append(_document_part(block, bpath))
        else:
            raise _unsupported(kind, bpath, "user")
    if parts or not messages:
        messages.append({"role": "user", "content": parts})
    return messages


def _text_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    return {"type": "text", "text": fields.req_str(block, "text", path)}


def _tool_call_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    call_input = fields.req_obj(block, "input", path)
    return {"type": "tool_call", "id": fields.req_str(block, "id", path),
            "name": fields.req_str(block, "name", path),
            "arguments": orjson.dumps(call_input).decode()}


def _image_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    spath = f"{path}.source"
    source = fields.req_obj(block, "source", path)
    kind = fields.req_str(source, "type", spath)
    if kind == "base64":
        return {"type": "image", "url": None,
                "media_type": fields.req_str(source, "media_type", spath),
                "data": fields.req_str(source, "data", spath)}
    if kind == "url":
        return {"type": "image", "url": fields.req_str(source, "url", spath),
                "media_type": None, "data": None}
    raise BadRequest(f"{spath}.type: image source type {kind!r} is not supported",
                     param=f"{spath}.type")


def _document_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    spath = f"{path}.source"
    source = fields.req_obj(block, "source", path)
    kind = fields.req_str(source, "type", spath)
    if kind == "text":
        return {"type": "text", "text": fields.req_str(source, "data", spath)}
    if kind == "content":
        text, images = _nested_content(source, f"{spath}.content")
        if images:
            raise BadRequest(f"{spath}.content: images inside documents are not supported",
                             param=f"{spath}.content")
        return {"type": "text", "text": text}
    raise BadRequest(f"{spath}.type: document source type {kind!r} is not supported "
                     "(only plain-text documents are)", param=f"{spath}.type")


def _tool_result(block: dict[str, Any], path: str,
                 names: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    call_id = fields.req_str(block, "tool_use_id", path)
    text, images = _nested_content(block, f"{path}.content")
    is_error = fields.opt_bool(block, "is_error", path) or False
    result = {"type": "tool_result", "tool_call_id": call_id, "name": names.get(call_id),
              "content": text, "is_error": is_error}
    return result, images


def _nested_content(container: dict[str, Any], path: str) -> tuple[str, list[dict[str, Any]]]:
    """``content`` of a tool_result or content document: (joined text, image parts)."""
    value = container.get("content")
    if value is None:
        return "", []
    if isinstance(value, str):
        return value, []
    items = fields.array(value, path)
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for k, raw in enumerate(items):
        ipath = f"{path}.{k}"
        item = fields.obj(raw, ipath)
        kind = _block_type(item, ipath)
        if kind == "text":
            texts.append(fields.req_str(item, "text", ipath))
        elif kind == "image":
            images.append(_image_part(item, ipath))
        else:
            raise BadRequest(f"{ipath}.type: block type {kind!r} is not supported here",
                             param=f"{ipath}.type")
    return TOOL_RESULT_JOIN.join(texts), images
