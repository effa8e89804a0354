"""Fast evaluation of the common template expressions, without a Jinja context per leaf.

Jinja builds a fresh Context (a ChainMap over the globals) for every ``compile_expression`` call; with
twenty leaves per request template that dominated the gateway's profile. Most leaves are simple:
names, attribute/item lookups, constants, filters with such arguments, ``a if b else c``, ``and``/
``or``/``not``. Those are parsed with Jinja's own parser and turned into small closures; attribute
access still goes through the sandbox's ``getattr``/``getitem`` (same safety checks). Anything else
returns None and the caller falls back to a real Jinja evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.parser import Parser
from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEnvironment

from router.canonical import CanonicalRequest

Fn = Callable[[dict[str, Any]], Any]


class _Missing:
    """An undefined value inside a fast expression (renders as "" in text, None at a leaf)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


# Plain data records the templates read (no methods reachable through their fields): their field
# names are the whole attribute surface, so reading one needs no sandbox check.
PLAIN_RECORDS: dict[type, frozenset[str]] = {
    CanonicalRequest: frozenset(f.name for f in dataclasses.fields(CanonicalRequest)),
}


def _plain(value: Any) -> Any:
    return None if value is MISSING or isinstance(value, Undefined) else value


def parse_expression(env: SandboxedEnvironment, source: str) -> nodes.Expr:
    parser = Parser(env, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
    return expr


def compile_expr(env: SandboxedEnvironment, node: nodes.Node) -> Fn | None:
    """A closure computing ``node``, or None when the node is outside the fast subset."""
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda ctx: value
    if isinstance(node, nodes.Name) and node.ctx == "load":
        name = node.name
        if name.startswith("_"):
            return None
        return lambda ctx: ctx.get(name, MISSING)
    if isinstance(node, nodes.Getattr):
        return _lookup(env, node.node, node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return _lookup(env, node.node, node.arg.value)
    if isinstance(node, nodes.Filter):
        return _filter(env, node)
    if isinstance(node, nodes.CondExpr):
        test, yes = compile_expr(env, node.test), compile_expr(env, node.expr1)
        no = compile_expr(env, node.expr2) if node.expr2 is not None else (lambda ctx: MISSING)
        if test is None or yes is None or no is None:
            return None
        return lambda ctx: yes(ctx) if test(ctx) else no(ctx)
    if isinstance(node, (nodes.And, nodes.Or)):
        left, right = compile_expr(env, node.left), compile_expr(env, node.right)
        if left is None or right is None:
            return None
        if isinstance(node, nodes.And):
            return lambda ctx: left(ctx) and right(ctx)
        return lambda ctx: left(ctx) or right(ctx)
    if isinstance(node, nodes.Not):
        inner = compile_expr(env, node.node)
        return None if inner is None else (lambda ctx: not inner(ctx))
    return None


def _lookup(env: SandboxedEnvironment, base: nodes.Node, key: Any) -> Fn | None:
    if isinstance(key, str) and key.startswith("_"):
        return None  # leave it to Jinja, which refuses it
    obj_fn = compile_expr(env, base)
    if obj_fn is None:
        return None
    getattr_ = env.getattr  # the sandbox's checked lookup: attribute, then item

    def lookup(ctx: dict[str, Any]) -> Any:
        obj = obj_fn(ctx)
        if obj is MISSING or obj is None:
            return MISSING
        t = type(obj)
        if t is dict:
            return obj.get(key, MISSING)
        if t in PLAIN_RECORDS and key in PLAIN_RECORDS[t]:
            return getattr(obj, key)  # a data field of our own record: nothing to guard
        value = getattr_(obj, key) if isinstance(key, str) else env.getitem(obj, key)
        return MISSING if isinstance(value, Undefined) else value

    return lookup


def _filter(env: SandboxedEnvironment, node: nodes.Filter) -> Fn | None:
    func = env.filters.get(node.name)
    # Only the gateway's filters (``env.fast_filters``) take None for a missing value; Jinja's own
    # (default, join...) keep Jinja's Undefined semantics on the slow path.
    if func is None or node.name not in getattr(env, "fast_filters", ()):
        return None
    if node.kwargs or node.dyn_args or node.dyn_kwargs or node.node is None:
        return None
    value_fn = compile_expr(env, node.node)
    arg_fns = [compile_expr(env, a) for a in node.args]
    if value_fn is None or any(a is None for a in arg_fns):
        return None
    if not arg_fns:
        return lambda ctx: func(_plain(value_fn(ctx)))
    return lambda ctx: func(_plain(value_fn(ctx)), *[_plain(a(ctx)) for a in arg_fns])  # type: ignore[misc]


def compile_text(env: SandboxedEnvironment, source: str) -> Fn | None:
    """Mixed text like ``"{{ a }}/x/{{ b | f }}"`` as a join of fast parts, or None."""
    try:
        tree = env.parse(source)
    except TemplateSyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[Fn | str] = []
    for child in tree.body[0].nodes:
        if isinstance(child, nodes.TemplateData):
            parts.append(child.data)
            continue
        fn = compile_expr(env, child)
        if fn is None:
            return None
        parts.append(fn)

    def render(ctx: dict[str, Any]) -> str:
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
            else:
                v = p(ctx)
                if v is not MISSING and not isinstance(v, Undefined):
                    out.append(str(v))
        return "".join(out)

    return render


def leaf_value(value: Any) -> Any:
    """A fast expression's result as a template leaf (undefined → None)."""
    return _plain(value)
