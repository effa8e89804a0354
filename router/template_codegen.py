"""Compile a structured template into one Python function (generated source, compiled once).

The whole tree becomes a single function: dict/list construction and pruning inline, expressions in
a subset (names, attribute/item lookups by a constant, constants, the gateway's own filters called
with positional arguments, ``a if b else c``, ``and``/``or``/``not``, text with such ``{{ }}``
parts: every shipped template) as inline Python expressions, lookups through checked helpers,
filters called directly. Any other leaf (Jinja's own filters, loops, operators...) renders through
Jinja itself (:func:`jinja_leaf`), under the render budget.

A subset expression means exactly what Jinja means by it in this environment (``templates.py``:
an attribute or item of an undefined value is undefined; the gateway's filters get none for an
undefined argument): lookups are Jinja's sandboxed ``getattr``-then-``getitem`` (``obj.name``) and
``getitem``-then-``getattr`` (``obj[key]``), read directly only where that gives the same value (a
plain dict and a name no dict attribute has; a field of a plain record); MISSING stands for
Jinja's undefined. ``tests/test_template_subset_vs_jinja.py`` renders each construct both ways.

Why generated code and not closures over the parsed expressions (measured; ``bench/template_render.py``
under callgrind, ``--count 0`` against ``--count 3000``): rendering the shipped Gemini template for the
bench's request (``upstream.render_request``) costs 62k instructions here and 94k through a closure
interpreter over the same subset (a closure per node, reads of ``name.key`` fused into one), where a
whole request costs the gateway 929k (``bench/instructions.py``): the generator saves 3.4% per request.

Safety: the generated source only ever contains identifiers we make up and ``repr()`` of constants
taken from the parsed template (strings, numbers, booleans, None); template text never becomes code.
Lookups go through ``make_lookups``' functions, which leave anything that is not a plain dict or one
of our plain data records to the sandbox's own ``getattr``/``getitem``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.parser import Parser
from jinja2.runtime import Undefined

from router.canonical import CanonicalRequest
from router.template_budget import within_budget
from router.template_sandbox import GuardedEnvironment

Renderer = Callable[[dict[str, Any]], Any]
NESTED_TOO_DEEPLY = "expression nested too deeply (split it into smaller expressions)"

_LONE_EXPR = re.compile(r"\A\s*\{\{(.*?)\}\}\s*\Z", re.DOTALL)


class _Missing:
    """An undefined value inside a generated expression (renders as "" in text, None at a leaf)."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


class _Prune:
    """Marker for a value that is left out of the rendered structure."""


PRUNE: Any = _Prune()

# Plain data records the templates read (no methods reachable through their fields): their field
# names are their whole attribute surface, so reading one needs no sandbox check.
PLAIN_RECORDS: dict[type, frozenset[str]] = {
    CanonicalRequest: frozenset(f.name for f in dataclasses.fields(CanonicalRequest)),
}
_REQUEST_FIELDS = PLAIN_RECORDS[CanonicalRequest]


@dataclass(frozen=True, slots=True)
class CompiledTree:
    """A compiled structured template: ``render(context)``, built once per snapshot."""

    render: Renderer  # returns PRUNE for a value that is left out
    names: frozenset[str] = frozenset()  # the context variables the template reads
    pure: bool = False  # True: the result depends on those variables alone (no filters, no Jinja)
    jinja: bool = False  # True: some leaf renders through Jinja (under a budget, off the event loop)
    words: frozenset[str] = frozenset()  # the identifiers in its text: error messages may quote these


def parse_expression(env: GuardedEnvironment, source: str) -> nodes.Expr:
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


# A dict's own attributes: ``d.items`` is Jinja's ``getattr(d, 'items')``, the bound method, and
# ``d['items']`` falls back to it when the dict has no such key. Lookups by these names go through
# Jinja's own functions; every other name reads a plain dict directly (decided when compiling).
DICT_ATTRIBUTES = frozenset(name for name in dir(dict) if not name.startswith("_"))


def make_lookups(env: GuardedEnvironment) -> dict[str, Callable[[Any, Any], Any]]:
    """The generated code's lookups, each exactly the sandbox's (``env.getattr`` for ``obj.name``,
    ``env.getitem`` for ``obj[key]``) with MISSING where Jinja's value is undefined: ``_attr`` and
    ``_item`` read a plain dict or a plain record directly (for names no dict attribute has),
    ``_jattr`` and ``_jitem`` always ask Jinja. None and MISSING have no attributes or items."""
    getattr_, getitem = env.getattr, env.getitem

    def jattr(obj: Any, name: str) -> Any:
        if obj is MISSING or obj is None:
            return MISSING
        value = getattr_(obj, name)
        return MISSING if isinstance(value, Undefined) else value

    def jitem(obj: Any, key: Any) -> Any:
        if obj is MISSING or obj is None:
            return MISSING
        value = getitem(obj, key)
        return MISSING if isinstance(value, Undefined) else value

    def attr(obj: Any, name: str) -> Any:
        t = type(obj)
        if t is dict:
            return obj.get(name, MISSING)
        fields = PLAIN_RECORDS.get(t)
        if fields is not None and name in fields:
            return getattr(obj, name)
        if obj is MISSING or obj is None:
            return MISSING
        value = getattr_(obj, name)
        return MISSING if isinstance(value, Undefined) else value

    def item(obj: Any, key: Any) -> Any:
        return obj.get(key, MISSING) if type(obj) is dict else jitem(obj, key)

    return {"_attr": attr, "_item": item, "_jattr": jattr, "_jitem": jitem}


def jinja_leaf(env: GuardedEnvironment, text: str) -> Renderer:
    """A Jinja renderer for a string leaf outside the subset (its value may be Undefined), run under
    the environment's render budget unless one is open already."""
    m = _LONE_EXPR.match(text)
    try:
        if m and "{{" not in m.group(1) and "}}" not in m.group(1):
            expr = env.compile_expression(m.group(1), undefined_to_none=True)  # raises TemplateSyntaxError
            return lambda ctx: within_budget(env.limits, lambda: expr(**ctx))
        tpl = env.from_string(text)  # raises TemplateSyntaxError
    except RecursionError:  # Jinja's parser and code generator recurse per operator: 1+1+...+1
        raise TemplateSyntaxError(NESTED_TOO_DEEPLY, 1) from None
    return lambda ctx: within_budget(env.limits, tpl.render, ctx)


def _defined(value: Any) -> Any:
    """A Jinja-rendered leaf: Undefined counts as none (subset values are never Undefined)."""
    return None if isinstance(value, Undefined) else value


def _str(value: Any) -> str:
    return "" if value is MISSING or isinstance(value, Undefined) else str(value)


def _lookup(kind: str, key: Any) -> str:
    """The lookup function for ``obj.key`` (kind ``_attr``) or ``obj[key]`` (``_item``)."""
    return "_j" + kind[1:] if key in DICT_ATTRIBUTES else kind


def _private(name: Any) -> bool:
    return isinstance(name, str) and name.startswith("_")


class _Expressions:
    """Python source for subset expressions; ``ns`` collects the objects the source refers to."""

    def __init__(self, env: GuardedEnvironment):
        self.env = env
        self.ns: dict[str, Any] = {"MISSING": MISSING, "PRUNE": PRUNE, "_str": _str, "_defined": _defined,
                                   "_CR": CanonicalRequest, **make_lookups(env)}
        self.names: dict[str, str] = {}  # template variable -> local
        self.pure = True  # only names, lookups, constants and operators: no filter, no Jinja leaf
        self._ids = count()
        self._kinds: dict[type, Callable[[Any], str | None]] = {
            nodes.Const: self._const, nodes.Name: self._name, nodes.Getattr: self._getattr,
            nodes.Getitem: self._getitem, nodes.Filter: self._filter, nodes.CondExpr: self._cond,
            nodes.And: self._and, nodes.Or: self._or, nodes.Not: self._not,
        }

    def tmp(self, prefix: str = "v") -> str:
        return f"{prefix}{next(self._ids)}"

    def bind(self, obj: Any, prefix: str = "k") -> str:
        name = self.tmp(prefix)
        self.ns[name] = obj
        return name

    def expr(self, node: nodes.Node) -> str | None:
        """Python source for a subset expression (its value may be MISSING), None outside the subset."""
        kind = self._kinds.get(type(node))
        return None if kind is None else kind(node)

    def _const(self, node: nodes.Const) -> str:
        return repr(node.value) if _is_literal(node.value) else self.bind(node.value)

    def _name(self, node: nodes.Name) -> str | None:
        # Jinja's globals (range, dict, lipsum...) and ``self`` (the template) are names too: left to Jinja
        if node.ctx != "load" or _private(node.name) or node.name in self.env.globals or node.name == "self":
            return None
        local = self.names.get(node.name)
        if local is None:
            local = self.names[node.name] = self.tmp("n")
        return local

    def _getattr(self, node: nodes.Getattr) -> str | None:
        base = None if _private(node.attr) else self.expr(node.node)
        if base is None:
            return None
        lookup = _lookup("_attr", node.attr)
        if node.attr in _REQUEST_FIELDS:
            # the canonical request: a plain attribute read inline instead of a call of the lookup
            # (measured: 80.0k -> 62.7k instructions for the Gemini render_request, 1.8% of a request)
            t = self.tmp("r")
            return f"({t}.{node.attr} if type({t} := {base}) is _CR else {lookup}({t}, {node.attr!r}))"
        return f"{lookup}({base}, {node.attr!r})"

    def _getitem(self, node: nodes.Getitem) -> str | None:
        key = node.arg.value if isinstance(node.arg, nodes.Const) else None
        if not isinstance(key, (str, int)) or _private(key):
            return None
        base = self.expr(node.node)
        return None if base is None else f"{_lookup('_item', key)}({base}, {key!r})"

    def _filter(self, node: nodes.Filter) -> str | None:
        if node.name not in self.env.own_filters or node.kwargs or node.dyn_args or node.dyn_kwargs \
                or node.node is None:
            return None
        parts = [self.expr(node.node)] + [self.expr(a) for a in node.args]
        if any(p is None for p in parts):
            return None
        fname = self.bind(self.env.filters[node.name], "f")
        self.pure = False
        args = []
        for p in parts:  # filters take None for a missing value
            t = self.tmp("a")
            args.append(f"(None if ({t} := {p}) is MISSING else {t})")
        return f"{fname}({', '.join(args)})"

    def _cond(self, node: nodes.CondExpr) -> str | None:
        test, yes = self.expr(node.test), self.expr(node.expr1)
        no = self.expr(node.expr2) if node.expr2 is not None else "MISSING"
        if test is None or yes is None or no is None:
            return None
        return f"(({yes}) if ({test}) else ({no}))"

    def _and(self, node: nodes.And) -> str | None:
        return self._binary(node, "and")

    def _or(self, node: nodes.Or) -> str | None:
        return self._binary(node, "or")

    def _binary(self, node: nodes.And | nodes.Or, op: str) -> str | None:
        left, right = self.expr(node.left), self.expr(node.right)
        if left is None or right is None:
            return None
        return f"(({left}) {op} ({right}))"

    def _not(self, node: nodes.Not) -> str | None:
        inner = self.expr(node.node)
        return None if inner is None else f"(not ({inner}))"


def subset_expression(env: GuardedEnvironment, source: str) -> str | None:
    """The Python source computing one ``{{ }}`` expression, None when it is outside the subset;
    raises TemplateSyntaxError."""
    return _Expressions(env).expr(parse_expression(env, source))


class _Gen(_Expressions):
    """Emits the statements of one template's function."""

    def __init__(self, env: GuardedEnvironment):
        super().__init__(env)
        self.lines: list[str] = []
        self.jinja = False  # some leaf renders through Jinja

    def leaf(self, text: str) -> str | None:
        """Source computing a string leaf's value (may be MISSING/None), or None for constant text."""
        if "{{" not in text and "{%" not in text and "{#" not in text:
            return None
        m = _LONE_EXPR.match(text)
        if m and "{{" not in m.group(1) and "}}" not in m.group(1):
            src = self.expr(parse_expression(self.env, m.group(1)))
        else:
            src = self._text(text)
        if src is not None:
            return src
        self.pure = False
        self.jinja = True
        return f"_defined({self.bind(jinja_leaf(self.env, text), 'slow')}(ctx))"

    def _text(self, text: str) -> str | None:
        tree = self.env.parse(text)
        if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
            return None
        pieces = []
        for child in tree.body[0].nodes:
            src = repr(child.data) if isinstance(child, nodes.TemplateData) else self.expr(child)
            if src is None:
                return None
            pieces.append(src if isinstance(child, nodes.TemplateData) else f"_str({src})")
        return "(" + " + ".join(pieces) + ")" if pieces else "''"

    def node(self, value: Any) -> tuple[str, bool]:
        """Emit statements computing ``value``: (the local holding it, whether it may be pruned).

        Only Jinja leaves are pruned when none/undefined; a literal null in the YAML is kept."""
        out = self.tmp()
        if isinstance(value, dict):
            self.lines.append(f"    {out} = {{}}")
            for k, v in value.items():
                self._store(v, f"{out}[{str(k)!r}] = ", "")
            return out, False
        if isinstance(value, list):
            self.lines.append(f"    {out} = []")
            for v in value:
                self._store(v, f"{out}.append(", ")")
            return out, False
        src = self.leaf(value) if isinstance(value, str) else None
        if src is not None:
            self.lines.append(f"    {out} = {src}")
            return out, True
        self.lines.append(f"    {out} = {repr(value) if _is_literal(value) else self.bind(value, 'c')}")
        return out, False

    def _store(self, value: Any, before: str, after: str) -> None:
        """Emit ``value`` and the statement putting it in its container (``before`` it ``after``),
        unless it is pruned."""
        sub, prunable = self.node(value)
        guard = f"if {sub} is not None and {sub} is not MISSING: " if prunable else ""
        self.lines.append(f"    {guard}{before}{sub}{after}")

    def source(self, result: str) -> str:
        head = ["def render(ctx):"] + [f"    {local} = ctx.get({var!r}, MISSING)" for var, local in self.names.items()]
        # an omitted value (none or undefined) comes back as PRUNE
        tail = [f"    return PRUNE if {result} is None or {result} is MISSING else {result}"]
        return "\n".join(head + self.lines + tail)


def compile_structure(env: GuardedEnvironment, tree: Any, name: str = "template") -> CompiledTree:
    """One function rendering ``tree``; an omitted value (none/undefined) comes back as PRUNE. Raises
    TemplateSyntaxError for a leaf that does not compile. Its Jinja leaves run under the environment's
    budget; the caller opens one budget for the whole tree (``templates.compile_tree``)."""
    gen = _Gen(env)
    try:  # the generator and Python's compiler recurse per operator: 1+1+...+1 runs out of stack
        result, _ = gen.node(tree)
        code = compile(gen.source(result), f"<template {name}>", "exec")
    except (RecursionError, SyntaxError):  # SyntaxError: "too many nested parentheses"
        raise TemplateSyntaxError(NESTED_TOO_DEEPLY, 1) from None
    exec(code, gen.ns)  # noqa: S102 - generated from a whitelisted AST, see the module docstring
    return CompiledTree(gen.ns["render"], frozenset(gen.names), gen.pure, gen.jinja)
