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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.defaults import DEFAULT_FILTERS
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.lexer import TOKEN_EOF, Token, TokenStream
from jinja2.runtime import Context
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
    escape_size,
    format_spec_size,
    join_size,
    lines_bound,
    materialized,
    printf_size,
    replace_size,
    split_bound,
    tabs_size,
    translate_size,
    words_bound,
)

_WALKED = (list, tuple, dict, range)  # a filter given one of these walks its items


class _GuardedCodeGenerator(CodeGenerator):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ticks: set[int] = set()  # ids of the nodes this generator inserted to charge an iteration

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
            current(self._env.limits).produce(format_spec_size(format_spec), "a format field")  # type: ignore[attr-defined]
        return super().format_field(value, format_spec)


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """The templates' environment: see the module docstring. ``limits`` bound each render."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, limits: TemplateLimits = DEFAULT_LIMITS, **options: Any):
        super().__init__(optimized=False, **options)
        self.limits = limits
        self.globals["range"] = charged_range
        self.globals["lipsum"] = _lipsum
        self.filters.update({name: _checked_filter(self, name, f) for name, f in DEFAULT_FILTERS.items()})

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

    def concat(self, pieces: Iterable[str]) -> str:  # type: ignore[override]
        """Joins a render's output; every piece counts against the budget as it comes."""
        budget = current(self.limits)
        out = []
        for piece in pieces:
            budget.produce(len(piece), "template output")
            out.append(piece)
        return "".join(out)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        budget = current(__self.limits)
        budget.tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes, int)) and not isinstance(owner, bool):
            check = _METHOD_CHECKS.get(getattr(__obj, "__name__", ""))
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
                args, kwargs = (), args[0]
            return str(formatter.vformat(owner, args, kwargs))

        return functools.update_wrapper(checked_format, value)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    """Jinja's ``lipsum``, its words (up to ``n * max``) charged as iterations first."""
    words = builtins.max(0, n) * builtins.max(0, max) if isinstance(n, int) and isinstance(max, int) else 1
    current().tick(words)
    return generate_lorem_ipsum(n, html, min, max)


# -- methods that build more than they are given ---------------------------------------------------

def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _width(budget: Budget, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    width = _arg(args, kwargs, 0, "width", 0)
    if isinstance(width, int):
        budget.need(max(len(owner), width), "a padded string")
    return args


def _to_bytes(budget: Budget, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    length = _arg(args, kwargs, 0, "length", 1)
    if isinstance(length, int):
        budget.need(length, "to_bytes()")
    return args


def _expandtabs(budget: Budget, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(owner, (str, bytes)):
        budget.need(tabs_size(owner, _arg(args, kwargs, 0, "tabsize", 8)), "expandtabs()")
    return args


def _replace(budget: Budget, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(owner, (str, bytes)) and len(args) >= 2:
        budget.need(replace_size(owner, args[0], args[1], _arg(args, kwargs, 2, "count", -1)), "replace()")
    return args


def _join(budget: Budget, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if not isinstance(owner, (str, bytes)) or len(args) != 1:
        return args
    items = materialized(args[0])
    budget.need(join_size(owner, items), "join()")
    return (items,)


def _split(budget: Budget, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(owner, (str, bytes)):  # checked before the pieces are built
        budget.need_items(split_bound(owner, _arg(args, kwargs, 0, "sep", None), _arg(args, kwargs, 1, "maxsplit", -1)),
                          "split()")
    return args


def _splitlines(budget: Budget, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(owner, (str, bytes)):
        budget.need_items(lines_bound(owner), "splitlines()")
    return args


def _translate(budget: Budget, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(owner, str) and args:
        budget.need(translate_size(owner, args[0]), "translate()")
    return args


_METHOD_CHECKS: dict[str, Callable[[Budget, Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]] = {
    "ljust": _width, "rjust": _width, "center": _width, "zfill": _width, "to_bytes": _to_bytes,
    "expandtabs": _expandtabs, "replace": _replace, "join": _join, "translate": _translate,
    "split": _split, "rsplit": _split, "splitlines": _splitlines,
}


# -- Jinja's own filters ---------------------------------------------------------------------------

def _checked_filter(env: GuardedEnvironment, name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` charging the budget: a call, the items of a sized input as iterations, its result's
    size; plus a prediction for the filters that build more than they are given."""
    offset = 1 if hasattr(f, "jinja_pass_arg") else 0  # context/eval_ctx/environment comes first
    precheck = _FILTER_CHECKS.get(name)
    pieces = _STRING_PIECES.get(name)

    @functools.wraps(f)  # keeps jinja_pass_arg
    def checked(*args: Any, **kwargs: Any) -> Any:
        budget = current(env.limits)
        value = args[offset] if len(args) > offset else None
        if isinstance(value, _WALKED):
            budget.tick(len(value) + 1)
        elif isinstance(value, str) and pieces is not None:  # charged before the pieces are built
            budget.tick(pieces(value) + 1)
        else:
            budget.tick()
        if precheck is not None:
            args = precheck(budget, offset, args, kwargs)
        return budget.result(f(*args, **kwargs))

    return checked


def _f_arg(args: tuple[Any, ...], kwargs: dict[str, Any], offset: int, i: int, name: str, default: Any) -> Any:
    return _arg(args[offset:], kwargs, i, name, default)


# Filters that cut a string they are given into pieces (characters, words, lines) and walk them:
# charged an upper bound of the pieces as iterations before they run (a 4 MB string cut into a list
# of words costs 100 MB, and urlize spends microseconds per word).
_STRING_PIECES: dict[str, Callable[[str], int]] = {
    **dict.fromkeys(("list", "sort", "unique", "slice", "batch", "groupby", "map", "select", "reject",
                     "selectattr", "rejectattr", "min", "max", "sum", "random"), len),
    **dict.fromkeys(("wordcount", "urlize", "title", "striptags", "wordwrap"), words_bound),
    "indent": lines_bound,
}


def _f_escape(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(args[offset], str):
        budget.need(escape_size(args[offset]), "escape")
    return args


def _f_center(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    width = _f_arg(args, kwargs, offset, 1, "width", 80)
    if isinstance(width, int):
        budget.need(max(len(str(args[offset])), width), "center")
    return args


def _f_indent(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    s = str(args[offset])
    width = _f_arg(args, kwargs, offset, 1, "width", 4)
    pad = width if isinstance(width, int) else len(str(width))
    budget.need(len(s) + (s.count("\n") + 1) * max(pad, 0), "indent")
    return args


def _f_wordwrap(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    s = str(args[offset])
    width = _f_arg(args, kwargs, offset, 1, "width", 79)
    wrap = _f_arg(args, kwargs, offset, 3, "wrapstring", None)
    breaks = len(s) // max(width if isinstance(width, int) else 1, 1) + s.count("\n") + 1
    budget.need(len(s) + breaks * max(len(str(wrap)) if wrap is not None else 1, 1), "wordwrap")
    return args


def _f_replace(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if len(args) >= offset + 3:
        old, new = args[offset + 1], args[offset + 2]
        budget.need(replace_size(str(args[offset]), str(old), str(new),
                                 _f_arg(args, kwargs, offset, 3, "count", None)), "replace")
    return args


def _f_join(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    items = materialized(args[offset])
    budget.need(join_size(str(_f_arg(args, kwargs, offset, 1, "d", "")), items), "join")
    return (*args[:offset], items, *args[offset + 1:])


def _f_format(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    budget.need(printf_size(str(args[offset]), None), "format")
    return args


def _f_slice(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    slices = _f_arg(args, kwargs, offset, 1, "slices", 0)
    if isinstance(slices, int):
        budget.tick(max(slices, 0))
    return args


def _f_batch(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    linecount = _f_arg(args, kwargs, offset, 1, "linecount", 0)
    if isinstance(linecount, int):
        budget.need(linecount, "batch")
    return args


def _f_sum(budget: Budget, offset: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    start = _f_arg(args, kwargs, offset, 2, "start", 0)
    if not isinstance(start, (int, float)):  # summing lists or strings copies quadratically
        raise TemplateLimitError("sum: only numbers can be summed in templates")
    return args


_FILTER_CHECKS: dict[str, Callable[[Budget, int, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]] = {
    "center": _f_center, "indent": _f_indent, "wordwrap": _f_wordwrap, "replace": _f_replace,
    "join": _f_join, "format": _f_format, "slice": _f_slice, "batch": _f_batch, "sum": _f_sum,
    "escape": _f_escape, "e": _f_escape, "forceescape": _f_escape,
}


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
        left, right = _constant(node.left, budget), _constant(node.right, budget)  # type: ignore[attr-defined]
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
