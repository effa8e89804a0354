"""Gemini ``tools``, ``toolConfig`` and ``generationConfig`` → canonical request fields.

Private to the Gemini codec. Only ``functionDeclarations`` map to canonical tools; built-in
tools (``googleSearch``, ``codeExecution``, ``urlContext``...) have no canonical form and are
ignored. Gemini's OpenAPI-style ``Schema`` (``parameters``, ``responseSchema``; upper-case types,
``nullable``) is turned into plain JSON Schema; ``parametersJsonSchema``/``responseJsonSchema``
already are JSON Schema and pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from router.client_codecs._fields import GEMINI as fields
from router.errors import BadRequest

_MODES = {"AUTO": "auto", "VALIDATED": "auto", "NONE": "none", "ANY": "required"}
_SCHEMA_DROP = frozenset(("propertyOrdering", "example", "nullable"))
MAX_SCHEMA_DEPTH = 64


def to_json_schema(schema: Any, depth: int = 0) -> Any:
    """Gemini ``Schema`` → JSON Schema: lower-case types, ``nullable`` → a ``"null"`` type,
    snake_case keywords → camelCase, Gemini-only keywords dropped."""
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return schema
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = _camel(raw_key)
        if key in _SCHEMA_DROP or (key == "format" and value == "enum"):
            continue
        if key == "type" and isinstance(value, str):
            if value.upper() != "TYPE_UNSPECIFIED":
                out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: to_json_schema(sub, depth + 1) for name, sub in value.items()}
        elif key == "items":
            out[key] = to_json_schema(value, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [to_json_schema(sub, depth + 1) for sub in value]
        else:
            out[key] = value
    if fields.get(schema, "nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


# --- tools -----------------------------------------------------------------------------------------


def decode_tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = [value]
    tools: list[dict[str, Any]] = []
    for t, tool in enumerate(fields.array(value, "tools")):
        path = f"tools[{t}]"
        decls = fields.opt_list(fields.obj(tool, path), "functionDeclarations", path) or []
        for d, decl in enumerate(decls):
            dpath = f"{path}.functionDeclarations[{d}]"
            tools.append(_declaration(fields.obj(decl, dpath), dpath))
    return tools or None


def _declaration(decl: dict[str, Any], path: str) -> dict[str, Any]:
    name = fields.opt_str(decl, "name", path)
    if not name:
        raise BadRequest(f"{path}.name: field required", param=f"{path}.name")
    params = fields.opt_obj(decl, "parametersJsonSchema", path)
    if params is None:
        gemini_params = fields.opt_obj(decl, "parameters", path)
        params = to_json_schema(gemini_params) if gemini_params is not None else None
    return {"name": name, "description": fields.opt_str(decl, "description", path), "parameters": params}


def decode_tool_choice(value: Any) -> str | dict[str, Any] | None:
    """``toolConfig.functionCallingConfig`` → ``auto|none|required`` or ``{"name": n}``."""
    if value is None:
        return None
    fcc = fields.opt_obj(fields.obj(value, "toolConfig"), "functionCallingConfig", "toolConfig")
    if fcc is None:
        return None
    path = "toolConfig.functionCallingConfig"
    mode = (fields.opt_str(fcc, "mode", path) or "").upper()
    if mode in ("", "MODE_UNSPECIFIED"):
        return None
    if mode not in _MODES:
        raise BadRequest(f"{path}.mode: unknown mode {mode!r}", param=f"{path}.mode")
    names = fields.str_list(fcc, "allowedFunctionNames", path) or []
    if _MODES[mode] == "required" and len(names) == 1:
        return {"name": names[0]}
    return _MODES[mode]


# --- generationConfig ------------------------------------------------------------------------------


def decode_generation_config(value: Any) -> dict[str, Any]:
    """``generationConfig`` → keyword arguments for :class:`CanonicalRequest`."""
    if value is None:
        return {}
    path = "generationConfig"
    cfg = fields.obj(value, path)
    out: dict[str, Any] = {
        "temperature": fields.opt_number(cfg, "temperature", path),
        "top_p": fields.opt_number(cfg, "topP", path),
        "top_k": fields.opt_int(cfg, "topK", path, minimum=1),
        "max_tokens": fields.opt_int(cfg, "maxOutputTokens", path, minimum=1),
        "stop": fields.str_list(cfg, "stopSequences", path) or None,
        "n": fields.opt_int(cfg, "candidateCount", path, minimum=1),
        "seed": fields.opt_int(cfg, "seed", path),
        "response_format": _response_format(cfg, path),
        "reasoning": _reasoning(fields.opt_obj(cfg, "thinkingConfig", path), f"{path}.thinkingConfig"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _response_format(cfg: dict[str, Any], path: str) -> dict[str, Any] | None:
    mime = fields.opt_str(cfg, "responseMimeType", path)
    if mime != "application/json":
        return None
    schema = fields.opt_obj(cfg, "responseJsonSchema", path)
    if schema is None:
        gemini_schema = fields.opt_obj(cfg, "responseSchema", path)
        schema = to_json_schema(gemini_schema) if gemini_schema is not None else None
    if schema is None:
        return {"type": "json_object", "schema": None, "name": None, "strict": None}
    return {"type": "json_schema", "schema": schema, "name": None, "strict": None}


def _reasoning(cfg: dict[str, Any] | None, path: str) -> dict[str, Any] | None:
    """``thinkingConfig`` → ``{"effort", "budget"}``; ``thinkingLevel`` becomes the effort."""
    if cfg is None:
        return None
    budget = fields.opt_int(cfg, "thinkingBudget", path, minimum=-1)
    level = fields.opt_str(cfg, "thinkingLevel", path)
    fields.opt_bool(cfg, "includeThoughts", path)
    effort = level.lower() if level and level.upper() != "THINKING_LEVEL_UNSPECIFIED" else None
    if budget is None and effort is None:
        return None
    return {"effort": effort, "budget": budget}


def unwrap_count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """A ``countTokens`` body may wrap the request as ``generateContentRequest``."""
    inner = fields.get(body, "generateContentRequest")
    if inner is not None and fields.get(body, "contents") is None:
        return fields.obj(inner, "generateContentRequest")
    return body
