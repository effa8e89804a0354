"""Compile a structured template into one Python function (generated source, compiled once).

Rendering through a closure per node cost ~100 Python calls per request for the shipped Gemini
template. Here the whole tree becomes a single function: dict/list construction and pruning inline,
expressions in a fast subset (names, attribute/item lookups, constants, the gateway's own filters,
``a if b else c``, ``and``/``or``/``not``, text with such ``{{ }}`` parts) as inline Python
expressions, attribute access through one checked helper, filters called directly. Any other leaf
(Jinja's own filters, loops, ...) calls its regular Jinja renderer.

Safety: the generated source only ever contains identifiers we make up and ``repr()`` of constants
taken from the parsed template (strings, numbers, booleans, None); template text never becomes code.
Attribute access goes through ``_get``, which applies the sandbox's checks to anything that is not a
plain dict or one of our plain data records.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from itertools import count
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.parser import Parser
from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEnvironment

from router.canonical import CanonicalRequest

Renderer = Callable[[dict[str, Any]], Any]
NESTED_TOO_DEEPLY = "expression nested too deeply (split it into smaller expressions)"


class _Missing:
    """An undefined value inside a generated expression (renders as "" in text, None at a leaf)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

# Plain data records the templates read (no methods reachable through their fields): their field
# names are their whole attribute surface, so reading one needs no sandbox check.
PLAIN_RECORDS: dict[type, frozenset[str]] = {
    CanonicalRequest: frozenset(f.name for f in dataclasses.fields(CanonicalRequest)),
}


_REQUEST_FIELDS = PLAIN_RECORDS[CanonicalRequest]


def parse_expression(env: SandboxedEnvironment, source: str) -> nodes.Expr:
    """Jinja's own parse of one ``{{ }}`` expression; raises TemplateSyntaxError."""
    parser = Parser(env, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
    return expr


_LITERALS = (str, int, float, bool, type(None))


def _is_literal(value: Any) -> bool:
    """Whether ``repr(value)`` is valid source for the value (inf/nan are not)."""
    return isinstance(value, _LITERALS) and not (isinstance(value, float) and not math.isfinite(value))


def make_getter(env: SandboxedEnvironment) -> Callable[[Any, Any], Any]:
    getattr_, getitem = env.getattr, env.getitem

    def _get(obj: Any, key: Any) -> Any:
        t = type(obj)
        if t is dict:
            return obj.get(key, MISSING)
        fields = PLAIN_RECORDS.get(t)
        if fields is not None and key in fields:
            return getattr(obj, key)
        if obj is MISSING or obj is None:
            return MISSING
        value = getattr_(obj, key) if isinstance(key, str) else getitem(obj, key)
        return MISSING if isinstance(value, Undefined) else value

    return _get


class _Gen:
    """Emits Python source for one template; ``ns`` collects the objects the source refers to."""

    def __init__(self, env: SandboxedEnvironment):
        self.env = env
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {"MISSING": MISSING, "_get": make_getter(env), "Undefined": Undefined,
                                   "_CR": CanonicalRequest}
        self.names: dict[str, str] = {}  # template variable -> local
        self.pure = True  # only names, attributes, constants and operators: no filter, no Jinja fallback
        self.jinja = False  # some leaf falls back to Jinja
        self._ids = count()

    def tmp(self, prefix: str = "v") -> str:
        return f"{prefix}{next(self._ids)}"

    def bind(self, obj: Any, prefix: str = "k") -> str:
        name = self.tmp(prefix)
        self.ns[name] = obj
        return name

    # -- expressions ---------------------------------------------------------------------------

    def expr(self, node: nodes.Node) -> str | None:
        """Python source for a fast-subset expression (value may be MISSING), or None."""
        if isinstance(node, nodes.Const):
            return repr(node.value) if _is_literal(node.value) else self.bind(node.value)
        if isinstance(node, nodes.Name) and node.ctx == "load" and not node.name.startswith("_"):
            local = self.names.get(node.name)
            if local is None:
                local = self.names[node.name] = self.tmp("n")
            return local
        if isinstance(node, nodes.Getattr) and not node.attr.startswith("_"):
            base = self.expr(node.node)
            if base is None:
                return None
            if node.attr in _REQUEST_FIELDS:  # the canonical request: a plain attribute read inline
                t = self.tmp("r")
                return f"({t}.{node.attr} if type({t} := {base}) is _CR else _get({t}, {node.attr!r}))"
            return f"_get({base}, {node.attr!r})"
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, (str, int)) \
                and not (isinstance(node.arg.value, str) and node.arg.value.startswith("_")):
            base = self.expr(node.node)
            return None if base is None else f"_get({base}, {node.arg.value!r})"
        if isinstance(node, nodes.Filter):
            return self._filter(node)
        if isinstance(node, nodes.CondExpr):
            test, yes = self.expr(node.test), self.expr(node.expr1)
            no = self.expr(node.expr2) if node.expr2 is not None else "MISSING"
            if test is None or yes is None or no is None:
                return None
            return f"(({yes}) if ({test}) else ({no}))"
        if isinstance(node, (nodes.And, nodes.Or)):
            left, right = self.expr(node.left), self.expr(node.right)
            if left is None or right is None:
                return None
            return f"(({left}) {'and' if isinstance(node, nodes.And) else 'or'} ({right}))"
        if isinstance(node, nodes.Not):
            inner = self.expr(node.node)
            return None if inner is None else f"(not ({inner}))"
        return None

    def _filter(self, node: nodes.Filter) -> str | None:
        func = self.env.filters.get(node.name)
        if func is None or node.name not in getattr(self.env, "fast_filters", ()):
            return None
        if node.kwargs or node.dyn_args or node.dyn_kwargs or node.node is None:
            return None
        parts = [self.expr(node.node)] + [self.expr(a) for a in node.args]
        if any(p is None for p in parts):
            return None
        fname = self.bind(func, "f")
        self.pure = False
        args = []
        for p in parts:  # filters take None for a missing value
            t = self.tmp("a")
            args.append(f"(None if ({t} := {p}) is MISSING else {t})")
        return f"{fname}({', '.join(args)})"

    # -- leaves and structure ------------------------------------------------------------------

    def leaf(self, text: str, fallback: Callable[[str], Renderer | None]) -> str | None:
        """Source computing a string leaf's value (may be MISSING/None), or None for constant text."""
        from router.templates import _LONE_EXPR  # the one definition of "a lone expression"

        if "{{" not in text and "{%" not in text and "{#" not in text:
            return None
        m = _LONE_EXPR.match(text)
        if m and "{{" not in m.group(1) and "}}" not in m.group(1):
            src = self.expr(parse_expression(self.env, m.group(1)))
            if src is not None:
                return src
        elif (src := self._text(text)) is not None:
            return src
        slow = fallback(text)
        assert slow is not None
        self.pure = False
        self.jinja = True
        return f"_defined({self.bind(slow, 'slow')}(ctx))"

    def _text(self, text: str) -> str | None:
        tree = self.env.parse(text)
        if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
            return None
        pieces = []
        for child in tree.body[0].nodes:
            if isinstance(child, nodes.TemplateData):
                pieces.append(repr(child.data))
                continue
            src = self.expr(child)
            if src is None:
                return None
            pieces.append(f"_str({src})")
        return "(" + " + ".join(pieces) + ")" if pieces else "''"

    def node(self, value: Any, fallback: Callable[[str], Renderer | None], indent: str) -> tuple[str, bool]:
        """Emit statements computing ``value``: (the local holding it, whether it may be pruned).

        Only Jinja leaves are pruned when none/undefined; a literal null in the YAML is kept."""
        out = self.tmp()
        if isinstance(value, (dict, list)):
            is_dict = isinstance(value, dict)
            self.lines.append(f"{indent}{out} = {{}}" if is_dict else f"{indent}{out} = []")
            for k, v in (value.items() if is_dict else enumerate(value)):
                sub, prunable = self.node(v, fallback, indent)
                store = f"{out}[{str(k)!r}] = {sub}" if is_dict else f"{out}.append({sub})"
                guard = f"if {sub} is not None and {sub} is not MISSING: " if prunable else ""
                self.lines.append(f"{indent}{guard}{store}")
            return out, False
        if isinstance(value, str):
            src = self.leaf(value, fallback)
            if src is not None:
                self.lines.append(f"{indent}{out} = {src}")
                return out, True
        literal = repr(value) if _is_literal(value) else self.bind(value, "c")
        self.lines.append(f"{indent}{out} = {literal}")
        return out, False


def _defined(value: Any) -> Any:
    """A Jinja-rendered leaf: Undefined counts as none (fast-path values are never Undefined)."""
    return None if isinstance(value, Undefined) else value


def _str(value: Any) -> str:
    return "" if value is MISSING or isinstance(value, Undefined) else str(value)


def compile_structure(env: SandboxedEnvironment, tree: Any, fallback: Callable[[str], Renderer | None],
                      name: str = "template", prune: Any = None) -> Renderer:
    """One function rendering ``tree``; an omitted value (none/undefined) comes back as ``prune``."""
    gen = _Gen(env)
    gen.ns["PRUNE"] = prune
    gen.ns["_str"] = _str
    gen.ns["_defined"] = _defined
    try:  # the generator and Python's compiler recurse per operator: 1+1+...+1 runs out of stack
        result, _ = gen.node(tree, fallback, "    ")
        head = ["def render(ctx):"] + [f"    {local} = ctx.get({var!r}, MISSING)" for var, local in gen.names.items()]
        # an omitted value (none or undefined) comes back as PRUNE
        tail = [f"    return PRUNE if {result} is None or {result} is MISSING else {result}"]
        source = "\n".join(head + gen.lines + tail)
        code = compile(source, f"<template {name}>", "exec")
    except (RecursionError, SyntaxError):  # SyntaxError: "too many nested parentheses"
        raise TemplateSyntaxError(NESTED_TOO_DEEPLY, 1) from None
    exec(code, gen.ns)  # noqa: S102 - generated from a whitelisted AST, see the module docstring
    fn: Renderer = gen.ns["render"]
    fn.__source__ = source  # type: ignore[attr-defined]  # for debugging and tests
    fn.__names__ = frozenset(gen.names)  # type: ignore[attr-defined]  # the context variables it reads
    fn.__pure__ = gen.pure  # type: ignore[attr-defined]  # its result depends on those variables alone
    fn.__jinja__ = gen.jinja  # type: ignore[attr-defined]  # some leaf falls back to Jinja
    return fn
