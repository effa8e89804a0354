"""Gemini ``contents`` / ``systemInstruction`` → canonical messages; private to the Gemini codec.

- ``user`` turns → user messages; ``functionResponse`` parts split off into ``tool`` messages
  placed before the turn's other parts (they answer the preceding model turn).
- ``model`` turns → assistant messages (consecutive ones merged: google-genai's chat history keeps
  every streamed chunk as its own turn): text, ``thought`` parts → thinking, ``functionCall`` →
  tool_call. Gemini calls usually carry no id, so ids ``call_<n>`` are synthesized, and a later
  ``functionResponse`` without an id takes the id of the first unanswered call of the same name.
- A ``thoughtSignature`` on a non-thought part becomes an empty thinking part (text ``""``) just
  before it, mirroring the Gemini response decoder so signatures survive a round trip.
- google-genai sends bytes (``inlineData.data``, ``thoughtSignature``) as URL-safe base64; they
  are turned into standard base64, which is what every upstream (and the original signer) expects.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.client_codecs._fields import GEMINI as fields
from router.errors import BadRequest

_ROLES = {"user": "user", "function": "user", "model": "assistant"}
_URLSAFE_TO_STD = str.maketrans("-_", "+/")


def std_base64(value: str) -> str:
    """URL-safe base64 → standard base64 (standard input is returned unchanged)."""
    return value.translate(_URLSAFE_TO_STD)


class _CallIds:
    """Synthesizes tool-call ids and pairs function responses with the calls they answer."""

    def __init__(self) -> None:
        self.count = 0
        self.unanswered: list[tuple[str, str]] = []  # (name, id) of calls not yet answered

    def for_call(self, given: str | None, name: str) -> str:
        self.count += 1
        call_id = given or f"call_{self.count}"
        self.unanswered.append((name, call_id))
        return call_id

    def for_response(self, given: str | None, name: str) -> str:
        for k, (call_name, call_id) in enumerate(self.unanswered):
            if (given and call_id == given) or (not given and call_name == name):
                del self.unanswered[k]
                return call_id
        if given:
            return given
        self.count += 1
        return f"call_{self.count}"


def decode_contents(value: Any) -> list[dict[str, Any]]:
    """``contents`` → canonical messages (a bare string or a single Content is accepted too)."""
    if isinstance(value, str):
        return [{"role": "user", "content": [{"type": "text", "text": value}]}]
    if isinstance(value, dict):
        value = [value]
    contents = fields.array(value, "contents")
    ids = _CallIds()
    messages: list[dict[str, Any]] = []
    for i, content in enumerate(contents):
        for message in _decode_content(fields.obj(content, f"contents[{i}]"), f"contents[{i}]", ids):
            if message["role"] == "assistant" and messages and messages[-1]["role"] == "assistant":
                messages[-1]["content"].extend(message["content"])  # e.g. a chat's streamed chunks
            else:
                messages.append(message)
    return messages


def decode_system(value: Any) -> str | None:
    """``systemInstruction`` (a Content, a string, or a list of parts) → one string."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, list):
        parts: Any = value
    else:
        parts = fields.get(fields.obj(value, "systemInstruction"), "parts")
    texts = []
    for k, part in enumerate(fields.array(parts or [], "systemInstruction.parts")):
        path = f"systemInstruction.parts[{k}]"
        if isinstance(part, str):
            texts.append(part)
            continue
        text = fields.opt_str(fields.obj(part, path), "text", path)
        if text is None:
            raise BadRequest(f"{path}: only text parts are allowed in a system instruction", param=path)
        texts.append(text)
    return "\n".join(texts) or None


def _decode_content(content: dict[str, Any], path: str, ids: _CallIds) -> list[dict[str, Any]]:
    role_name = fields.opt_str(content, "role", path) or "user"
    role = _ROLES.get(role_name)
    if role is None:
        raise BadRequest(f"{path}.role: must be 'user' or 'model', got {role_name!r}", param=f"{path}.role")
    parts = fields.get(content, "parts")
    parts = fields.array(parts if parts is not None else [], f"{path}.parts")
    body: list[dict[str, Any]] = []
    if role == "assistant":
        for k, part in enumerate(parts):
            body.extend(_model_part(part, f"{path}.parts[{k}]", ids))
        return [{"role": "assistant", "content": body}] if body else []
    tools: list[dict[str, Any]] = []
    for k, part in enumerate(parts):
        ppath = f"{path}.parts[{k}]"
        part = _part_obj(part, ppath)
        response = fields.get(part, "functionResponse")
        if response is not None:
            tools.append(_tool_message(fields.obj(response, f"{ppath}.functionResponse"), ppath, ids))
        else:
            body.extend(_common_part(part, ppath))
    user = [{"role": "user", "content": body}] if body else []
    return tools + user


def _part_obj(part: Any, path: str) -> dict[str, Any]:
    if isinstance(part, str):  # tolerated shorthand for a text part
        return {"text": part}
    return fields.obj(part, path)


def _model_part(raw: Any, path: str, ids: _CallIds) -> list[dict[str, Any]]:
    part = _part_obj(raw, path)
    signature = fields.opt_str(part, "thoughtSignature", path)
    signature = std_base64(signature) if signature else None
    if fields.get(part, "thought") is True:
        text = fields.opt_str(part, "text", path) or ""
        return [{"type": "thinking", "text": text, "signature": signature}]
    out = [{"type": "thinking", "text": "", "signature": signature}] if signature else []
    call = fields.get(part, "functionCall")
    if call is not None:
        out.append(_tool_call(fields.obj(call, f"{path}.functionCall"), f"{path}.functionCall", ids))
    else:
        out.extend(_common_part(part, path))
    return out


def _tool_call(call: dict[str, Any], path: str, ids: _CallIds) -> dict[str, Any]:
    name = fields.opt_str(call, "name", path)
    if not name:
        raise BadRequest(f"{path}.name: field required", param=f"{path}.name")
    args = fields.get(call, "args")
    if args is not None and not isinstance(args, dict):
        raise fields.wrong(f"{path}.args", "an object", args)
    call_id = ids.for_call(fields.opt_str(call, "id", path), name)
    arguments = orjson.dumps(args or {}).decode()
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def _tool_message(response: dict[str, Any], path: str, ids: _CallIds) -> dict[str, Any]:
    path = f"{path}.functionResponse"
    name = fields.opt_str(response, "name", path)
    if not name:
        raise BadRequest(f"{path}.name: field required", param=f"{path}.name")
    body = fields.opt_obj(response, "response", path) or {}
    result = {
        "type": "tool_result",
        "tool_call_id": ids.for_response(fields.opt_str(response, "id", path), name),
        "name": name,
        "content": orjson.dumps(body).decode(),
        "is_error": set(body) == {"error"},
    }
    return {"role": "tool", "content": [result]}


def _common_part(part: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """text, inlineData and fileData parts (the kinds both roles may carry)."""
    text = fields.opt_str(part, "text", path)
    if text is not None:
        return [{"type": "text", "text": text}] if text else []
    inline = fields.get(part, "inlineData")
    if inline is not None:
        return [_inline(fields.obj(inline, f"{path}.inlineData"), f"{path}.inlineData")]
    file_data = fields.get(part, "fileData")
    if file_data is not None:
        return [_file(fields.obj(file_data, f"{path}.fileData"), f"{path}.fileData")]
    if fields.get(part, "functionCall") is not None or fields.get(part, "functionResponse") is not None:
        kind = "functionCall" if fields.get(part, "functionCall") is not None else "functionResponse"
        raise BadRequest(f"{path}: a {kind} part is not allowed in this role", param=path)
    if fields.get(part, "thoughtSignature") is not None and len(part) == 1:
        return []
    keys = ", ".join(sorted(part)) or "none"
    raise BadRequest(f"{path}: unsupported part (keys: {keys})", param=path)


def _inline(blob: dict[str, Any], path: str) -> dict[str, Any]:
    data = fields.opt_str(blob, "data", path)
    if not data:
        raise BadRequest(f"{path}.data: field required", param=f"{path}.data")
    mime = fields.opt_str(blob, "mimeType", path)
    return {"type": "image", "url": None, "media_type": mime or None, "data": std_base64(data)}


def _file(file_data: dict[str, Any], path: str) -> dict[str, Any]:
    uri = fields.opt_str(file_data, "fileUri", path)
    if not uri:
        raise BadRequest(f"{path}.fileUri: field required", param=f"{path}.fileUri")
    mime = fields.opt_str(file_data, "mimeType", path)
    return {"type": "image", "url": uri, "media_type": mime or None, "data": None}
