"""Structured request templates: YAML trees whose string leaves may be Jinja, compiled once.

A leaf that is exactly one ``{{ expr }}`` keeps the native type of its value (list, dict, number,
bool); mixed text renders as a string; leaves (and mapping entries) that evaluate to none/undefined
are pruned, so optional fields need no ``{% if %}``. Everything runs in Jinja's immutable sandbox:
templates cannot reach Python internals or mutate the request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from jinja2 import TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

_LONE_EXPR = re.compile(r"\A\s*\{\{(.*?)\}\}\s*\Z", re.DOTALL)

Renderer = Callable[[dict[str, Any]], Any]


class _Prune:
    """Marker for a value that is left out of the rendered structure."""


PRUNE = _Prune()


def _path_segment(value: Any) -> str:
    # Encodes '/', '?', '#', '%' and '.', so a model name can never leave its path segment.
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


def _tojson(value: Any) -> str:
    return orjson.dumps(value).decode()


def _with_model(body: Any, model: str) -> Any:
    """A shallow copy of a passthrough body with ``model`` replaced (same-dialect routes)."""
    if not isinstance(body, dict):
        return body
    out = dict(body)
    out["model"] = model
    return out


def _without(body: Any, *keys: str) -> Any:
    if not isinstance(body, dict):
        return body
    return {k: v for k, v in body.items() if k not in keys}


BASE_FILTERS: dict[str, Callable[..., Any]] = {
    "path_segment": _path_segment,
    "urlencode": _path_segment,
    "tojson": _tojson,
    "with_model": _with_model,
    "without": _without,
}


def make_environment(filters: dict[str, Callable[..., Any]]) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=Undefined, autoescape=False, auto_reload=False,
                                        cache_size=0)
    env.filters.update(BASE_FILTERS)
    env.filters.update(filters)
    return env


def _none_if_undefined(value: Any) -> Any:
    return None if isinstance(value, Undefined) else value


def compile_leaf(env: ImmutableSandboxedEnvironment, text: str) -> Renderer | Any:
    """A renderer for a Jinja string leaf, or the constant itself when it holds no Jinja."""
    if "{{" not in text and "{%" not in text and "{#" not in text:
        return text
    m = _LONE_EXPR.match(text)
    if m and "{{" not in m.group(1) and "}}" not in m.group(1):
        expr = env.compile_expression(m.group(1), undefined_to_none=True)
        return lambda ctx: expr(**ctx)
    tpl = env.from_string(text)
    return lambda ctx: tpl.render(ctx)


@dataclass(frozen=True, slots=True)
class _Node:
    kind: str  # "dict" | "list" | "fn" | "const"
    value: Any


def compile_tree(env: ImmutableSandboxedEnvironment, node: Any) -> _Node:
    """Compile a structured template; raises TemplateSyntaxError with the offending text."""
    if isinstance(node, dict):
        return _Node("dict", tuple((str(k), compile_tree(env, v)) for k, v in node.items()))
    if isinstance(node, list):
        return _Node("list", tuple(compile_tree(env, v) for v in node))
    if isinstance(node, str):
        leaf = compile_leaf(env, node)
        return _Node("fn", leaf) if callable(leaf) else _Node("const", leaf)
    return _Node("const", node)


def render_tree(node: _Node, ctx: dict[str, Any]) -> Any:
    """Render a compiled template; none/undefined values come back as PRUNE and are dropped."""
    kind = node.kind
    if kind == "const":
        return node.value
    if kind == "fn":
        value = _none_if_undefined(node.value(ctx))
        return PRUNE if value is None else value
    if kind == "dict":
        out = {}
        for key, child in node.value:
            v = render_tree(child, ctx)
            if v is not PRUNE:
                out[key] = v
        return out
    items = [render_tree(child, ctx) for child in node.value]
    return [v for v in items if v is not PRUNE]


def template_errors(env: ImmutableSandboxedEnvironment, node: Any, pointer: tuple[Any, ...]
                    ) -> Iterable[tuple[tuple[Any, ...], str]]:
    """(pointer, message) for every leaf that does not compile."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from template_errors(env, v, pointer + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from template_errors(env, v, pointer + (i,))
    elif isinstance(node, str):
        try:
            compile_leaf(env, node)
        except TemplateSyntaxError as e:
            yield pointer, f"template syntax error: {e.message}"

