"""Jinja's immutable sandbox, hardened against templates that would freeze or exhaust the gateway.

Jinja evaluates constant expressions while compiling (its optimizer folds ``9 ** (9 ** 8)``, and the
code generator folds every constant ``{{ }}`` even with the optimizer off): a one-line template could
hold the GIL for minutes in ``router check`` or a reload. Here nothing is evaluated at compile time:
the optimizer is off, constant output is not folded, and the amplifying operators (``+ * ** %``) are
intercepted (Jinja never folds those). Instead a cheap static check refuses constant
sub-expressions whose result would be too large (``template_budget.binop_size``).

At render time every hook charges the render budget (``template_budget``): loop iterations (a tick
at the top of every ``for`` body and filter test), calls, operator results (their size predicted
before they are built), filter and method results (with predictions for those that build more than
they are given: ``center``, ``indent``, ``replace``, ``join``, ``format``, ``ljust``,
``expandtabs``, ``escape``...), the items a Jinja filter walks (for one cutting a string into
characters, words or lines, and for ``split``/``splitlines``, an upper bound of the pieces, before
they are built), and every piece of output; ``range`` refuses more items than could be iterated, and
comparisons (``x in big``) check the clock.
"""

from __future__ import annotations

import builtins
import functools
import math
import operator
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.lexer import TOKEN_EOF, Token, TokenStream
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import generate_lorem_ipsum

from router.template_budget import (
    DEFAULT_LIMITS,
    Budget,
    TemplateLimitError,
    TemplateLimits,
    binop_size,
    charged_range,
    current,
    format_spec_size,
)
from router.template_checks import METHOD_CHECKS, checked_filter


class _GuardedCodeGenerator(CodeGenerator):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ticks: set[int] = set()  # ids of the nodes this generator inserted to charge an iteration
        self._or_none: dict[int, nodes.Expr] = {}  # the filter arguments it wrapped (kept alive: ids stay unique)

    def _tick(self, lineno: int) -> nodes.Expr:
        """A node for ``environment.loop_tick()`` (Jinja allows no custom node types: this one is
        recognized by identity in visit_EnvironmentAttribute)."""
        node = nodes.EnvironmentAttribute("loop_tick", lineno=lineno)
        self._ticks.add(id(node))
        return node

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if isinstance(node, nodes.TemplateData):  # plain text: nothing to evaluate
            return super()._output_child_to_const(node, frame, finalize)
        raise nodes.Impossible()  # everything else is computed at render time, under the budget

    def visit_EnvironmentAttribute(self, node: nodes.EnvironmentAttribute, frame: Frame) -> None:
        if id(node) in self._ticks:
            self.write("environment.loop_tick()")
        else:
            super().visit_EnvironmentAttribute(node, frame)

    def _none_if_undefined(self, expr: nodes.Expr) -> nodes.Expr:
        """A node for ``environment.none_if_undefined(expr)`` (recognized by identity, like ``_tick``)."""
        node = nodes.MarkSafeIfAutoescape(expr, lineno=expr.lineno)
        self._or_none[id(node)] = node
        return node

    def visit_MarkSafeIfAutoescape(self, node: nodes.MarkSafeIfAutoescape, frame: Frame) -> None:
        if id(node) not in self._or_none:
            return super().visit_MarkSafeIfAutoescape(node, frame)
        self.write("environment.none_if_undefined(")
        self.visit(node.expr, frame)
        self.write(")")
        return None

    def visit_Filter(self, node: nodes.Filter, frame: Frame) -> None:
        # the gateway's filters get none for an undefined argument, as in the generated fast path
        if node.node is not None and node.name in self.environment.own_filters:  # type: ignore[attr-defined]  # a GuardedEnvironment
            wrap = self._none_if_undefined
            node = nodes.Filter(wrap(node.node), node.name, [wrap(a) for a in node.args],
                                [nodes.Keyword(k.key, wrap(k.value), lineno=k.lineno) for k in node.kwargs],
                                node.dyn_args, node.dyn_kwargs, lineno=node.lineno)
        super().visit_Filter(node, frame)

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.body = [nodes.ExprStmt(self._tick(node.lineno), lineno=node.lineno), *node.body]
        if node.test is not None:  # items a filter test skips are iterations too
            node.test = nodes.And(self._tick(node.lineno), node.test, lineno=node.lineno)
        super().visit_For(node, frame)

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        # ``x in big`` and ``a == b`` walk their operands: a clock check after each comparison
        self.write("environment.timed(")
        super().visit_Compare(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # the ``~`` operator
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _CheckedFormatter(SandboxedFormatter):
    """``str.format`` whose field widths and precisions are charged before they are applied."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        if format_spec:
            current(self._env.limits).produce(format_spec_size(format_spec), "a format field")  # type: ignore[attr-defined]  # a GuardedEnvironment
        return super().format_field(value, format_spec)


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """The templates' environment: see the module docstring. ``limits`` bound each render;
    ``own_filters`` are the gateway's filters (plain functions over plain data), registered over
    Jinja's and called directly, without the budget wrapper, by the code ``template_codegen`` generates."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, limits: TemplateLimits = DEFAULT_LIMITS,
                 own_filters: Mapping[str, Callable[..., Any]] | None = None, **options: Any):
        super().__init__(optimized=False, **options)
        self.limits = limits
        self.own_filters: frozenset[str] = frozenset(own_filters or ())
        self.globals["range"] = charged_range
        self.globals["lipsum"] = _lipsum
        self.filters.update({name: checked_filter(self, name, f) for name, f in DEFAULT_FILTERS.items()})
        self.filters.update(own_filters or {})

    # -- compile time ----------------------------------------------------------------------------

    def _tokenize(self, source: str, name: str | None, filename: str | None = None,
                  state: str | None = None) -> TokenStream:
        try:  # the stream reads its first token at once
            stream = super()._tokenize(source, name, filename, state)
        except ValueError as e:
            raise TemplateSyntaxError(f"number literal too long: {e}", 1, name, filename) from None
        return TokenStream(_literals_checked(stream), name, filename)

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        check_constants(source, self.limits)
        return super()._generate(source, name, filename, defer_init)

    # -- render-time hooks (the generated code calls these) --------------------------------------

    @staticmethod
    def none_if_undefined(value: Any) -> Any:
        """An argument of the gateway's filters: none for an undefined value (they are written for none)."""
        return None if isinstance(value, Undefined) else value

    def loop_tick(self) -> bool:
        return current(self.limits).tick()

    def timed(self, value: Any) -> Any:
        current(self.limits).in_time()
        return value

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current(self.limits)
        budget.need(binop_size(operator, left, right), f"the result of '{operator}'")
        return budget.result(self.binop_table[operator](left, right))

    def checked_concat(self, values: Iterable[Any]) -> str:
        parts = [str(v) for v in values]
        current(self.limits).produce(sum(map(len, parts)), "the result of '~'")
        return "".join(parts)

    def concat(self, pieces: Iterable[str]) -> str:
        """Joins a render's output; every piece counts against the budget as it comes."""
        budget = current(self.limits)
        out = []
        for piece in pieces:
            budget.produce(len(piece), "template output")
            out.append(piece)
        return "".join(out)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805  # Jinja's signature: 'self' may be a keyword of the call
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        budget = current(__self.limits)
        budget.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes, int)) and not isinstance(owner, bool):
            check = METHOD_CHECKS.get(getattr(__obj, "__name__", ""))
            if check is not None:
                args = check(budget, owner, args, kwargs)
        return budget.result(__context.call(__obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map`` through a formatter that charges field widths first."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) \
                or value.__name__ not in ("format", "format_map") or not isinstance(value.__self__, str):
            return None
        owner: str = value.__self__
        formatter = _CheckedFormatter(self)
        is_map = value.__name__ == "format_map"

        def checked_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return str(formatter.vformat(owner, (), args[0]))
            return str(formatter.vformat(owner, args, kwargs))

        return functools.update_wrapper(checked_format, value)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    """Jinja's ``lipsum``, its words (up to ``n * max``) charged as iterations first."""
    words = builtins.max(0, n) * builtins.max(0, max) if isinstance(n, int) and isinstance(max, int) else 1
    current().tick(words)
    return generate_lorem_ipsum(n, html, min, max)


def _literals_checked(stream: TokenStream) -> Iterator[Token]:
    """The tokens of ``stream``; a number literal Python refuses to convert (over 4300 digits) is a
    template syntax error, not a ValueError escaping from the lexer (a traceback in router check)."""
    while True:
        lineno = stream.current.lineno
        try:
            token = next(stream)
        except StopIteration:
            return
        except ValueError as e:
            raise TemplateSyntaxError(f"number literal too long: {e}", lineno, stream.name, stream.filename) from None
        yield token
        if token.type == TOKEN_EOF:
            return


# -- the compile-time check of constant sub-expressions -------------------------------------------

_UNKNOWN: Any = object()
_BINOPS: dict[type, str] = {nodes.Add: "+", nodes.Sub: "-", nodes.Mul: "*", nodes.Div: "/",
                            nodes.FloorDiv: "//", nodes.Mod: "%", nodes.Pow: "**"}
_OPS: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                                              "/": operator.truediv, "//": operator.floordiv,
                                              "%": operator.mod, "**": operator.pow}


def check_constants(tree: nodes.Node, limits: TemplateLimits) -> None:
    """Raise TemplateSyntaxError for a constant sub-expression too large to compute (a huge power or
    repetition). Constants small enough are computed here, so sizes propagate (``9 ** (9 ** 8)``)."""
    _constant(tree, Budget(limits, deadline=math.inf))


def _constant(node: nodes.Node, budget: Budget) -> Any:
    """The value of a constant expression (after checking its size), else _UNKNOWN."""
    if isinstance(node, nodes.Const):
        return node.value
    op = _BINOPS.get(type(node))
    if op is not None:
        left, right = _constant(node.left, budget), _constant(node.right, budget)  # type: ignore[attr-defined]  # every _BINOPS node is a BinExpr
        if left is _UNKNOWN or right is _UNKNOWN:
            return _UNKNOWN
        try:
            budget.produce(binop_size(op, left, right), f"'{op}' of constants")
        except TemplateLimitError as e:
            raise TemplateSyntaxError(f"a constant expression is too large to compute: {e.message}",
                                      node.lineno) from None
        try:
            return _OPS[op](left, right)
        except (ArithmeticError, TypeError, ValueError):  # 1/0, 'a' - 1: an error when rendered
            return _UNKNOWN
    if isinstance(node, (nodes.List, nodes.Tuple)):
        items = [_constant(item, budget) for item in node.items]
        if any(item is _UNKNOWN for item in items):
            return _UNKNOWN
        return items if isinstance(node, nodes.List) else tuple(items)
    if isinstance(node, nodes.Neg):
        value = _constant(node.node, budget)
        return -value if isinstance(value, (int, float)) else _UNKNOWN
    for child in node.iter_child_nodes():
        _constant(child, budget)
    return _UNKNOWN
