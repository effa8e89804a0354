"""Structured request templates: YAML trees whose string leaves may be Jinja, compiled once.

A leaf that is exactly one ``{{ expr }}`` keeps the native type of its value (list, dict, number,
bool); mixed text renders as a string; leaves (and mapping entries) that evaluate to none/undefined
are pruned, so optional fields need no ``{% if %}``. Everything runs in Jinja's immutable sandbox:
templates cannot reach Python internals or mutate the request; leaves that need Jinja itself run
under a render budget (``template_sandbox``, ``template_budget``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import orjson
from jinja2 import TemplateSyntaxError, Undefined

from router.template_budget import DEFAULT_LIMITS, TemplateLimitError, TemplateLimits, within_budget
from router.template_codegen import NESTED_TOO_DEEPLY, compile_structure
from router.template_sandbox import GuardedEnvironment

_LONE_EXPR = re.compile(r"\A\s*\{\{(.*?)\}\}\s*\Z", re.DOTALL)

Renderer = Callable[[dict[str, Any]], Any]


class _Prune:
    """Marker for a value that is left out of the rendered structure."""


PRUNE = _Prune()


def _path_segment(value: Any) -> str:
    return _segment(value if type(value) is str else str(value))


@lru_cache(maxsize=4096)  # model names repeat: quote once per name, not per request
def _segment(text: str) -> str:
    # Encodes '/', '?', '#', '%' and '.', so a model name can never leave its path segment.
    quoted = quote(text, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


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


def _bearer(key: Any) -> str | None:
    """``Bearer <key>``, or none for a keyless account, so the header is left out (never ``Bearer ``)."""
    return f"Bearer {key}" if key else None


BASE_FILTERS: dict[str, Callable[..., Any]] = {
    "bearer": _bearer,
    "path_segment": _path_segment,
    "urlencode": _path_segment,
    "tojson": _tojson,
    "with_model": _with_model,
    "without": _without,
}


def make_environment(filters: dict[str, Callable[..., Any]], limits: TemplateLimits = DEFAULT_LIMITS
                     ) -> GuardedEnvironment:
    env = GuardedEnvironment(limits, undefined=Undefined, autoescape=False, auto_reload=False, cache_size=0)
    env.filters.update(BASE_FILTERS)
    env.filters.update(filters)
    env.fast_filters = frozenset(BASE_FILTERS) | frozenset(filters)  # type: ignore[attr-defined]
    return env


def _leaf_fn(env: GuardedEnvironment, text: str) -> Renderer | None:
    """A Jinja renderer for a string leaf (its value may be Undefined), None for plain text.

    The code generator (``template_codegen``) handles the common expressions itself and only
    falls back to this for the rest."""
    if "{{" not in text and "{%" not in text and "{#" not in text:
        return None
    m = _LONE_EXPR.match(text)
    try:
        if m and "{{" not in m.group(1) and "}}" not in m.group(1):
            expr = env.compile_expression(m.group(1), undefined_to_none=True)  # raises TemplateSyntaxError
            return lambda ctx: within_budget(env.limits, lambda: expr(**ctx))
        tpl = env.from_string(text)  # raises TemplateSyntaxError
    except RecursionError:  # Jinja's parser and code generator recurse per operator: 1+1+...+1
        raise TemplateSyntaxError(NESTED_TOO_DEEPLY, 1) from None
    return lambda ctx: within_budget(env.limits, tpl.render, ctx)


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled structured template: one closure per node, built once per snapshot."""

    render: Renderer  # returns PRUNE for a value that is left out
    names: frozenset[str] = frozenset()  # the context variables the template reads
    pure: bool = False  # True: the result depends on those variables alone (no filters, no Jinja)
    jinja: bool = False  # True: some leaf falls back to Jinja (render under a budget, off the event loop)
    words: frozenset[str] = frozenset()  # the identifiers in its text: error messages may quote these


def compile_tree(env: GuardedEnvironment, node: Any, name: str = "template",
                 limits: TemplateLimits | None = None) -> _Node:
    """Compile a structured template into one generated function (see ``template_codegen``);
    raises TemplateSyntaxError with the offending text. Its Jinja leaves render under ``limits``
    (default: the environment's)."""
    fn = compile_structure(env, node, lambda text: _leaf_fn(env, text), name, PRUNE)
    words = frozenset(_text_words(node))
    if not fn.__jinja__:  # type: ignore[attr-defined]
        return _Node(fn, fn.__names__, fn.__pure__, words=words)  # type: ignore[attr-defined]
    limits = limits or env.limits  # one budget for all the tree's Jinja leaves (shared with the caller's, if any)
    return _Node(lambda ctx: within_budget(limits, fn, ctx), fn.__names__, False, True, words)  # type: ignore[attr-defined]


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _text_words(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _text_words(v)
    elif isinstance(node, list):
        for v in node:
            yield from _text_words(v)
    elif isinstance(node, str) and "{" in node:
        yield from _WORD.findall(node)


# -- run-time errors, told without the values the render computed ----------------------------------

_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_TYPE_NAME = re.compile(r"\A[\w.]+ object\Z")  # Jinja's description of a value: 'dict object'
_PY_TYPES = frozenset({"str", "int", "float", "bool", "dict", "list", "tuple", "NoneType", "bytes", "range",
                       "Undefined", "Markup", "function", "method", "builtin_function_or_method"})
MAX_ERROR_CHARS = 500


def client_error(e: BaseException) -> str:
    """What the client is told of a template failing on its request: our budget messages (which hold
    no request data) or the error's type. Messages of other errors quote lookup keys and values the
    render computed (``'dict object' has no attribute '<the key, upper-cased>'``)."""
    return e.message if isinstance(e, TemplateLimitError) else type(e).__name__  # type: ignore[return-value]


def logged_error(e: BaseException, words: frozenset[str]) -> str:
    """The error for the log: its type and message, every quoted value left out (``'…'``) but the
    names written in the template's own text (``words``: ``'foo' is undefined``) and type names."""
    if isinstance(e, TemplateLimitError):
        return str(e.message)

    def quoted(m: re.Match[str]) -> str:
        inner = m.group(0)[1:-1]
        return m.group(0) if inner in words or inner in _PY_TYPES or _TYPE_NAME.match(inner) else "'…'"

    text = _QUOTED.sub(quoted, str(e))
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "…"
    return f"{type(e).__name__}: {text}"


def render_tree(node: _Node, ctx: dict[str, Any]) -> Any:
    """Render a compiled template; none/undefined values come back as PRUNE and are dropped."""
    return node.render(ctx)


def template_errors(env: GuardedEnvironment, node: Any, pointer: tuple[Any, ...]
                    ) -> Iterable[tuple[tuple[Any, ...], str]]:
    """(pointer, message) for every leaf that does not compile."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from template_errors(env, v, pointer + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from template_errors(env, v, pointer + (i,))
    elif isinstance(node, str):
        try:  # compile_tree parses every leaf and compiles with Jinja each one it cannot generate
            compile_tree(env, node)
        except TemplateSyntaxError as e:
            yield pointer, f"template syntax error: {e.message}"

