"""The budget checks of calls a template makes: ``str``/``bytes`` methods and Jinja's own filters.

Each charges the render budget (``template_budget``) before the call runs where the call can build
much more than it is given: padded and repeated text (``center``, ``ljust``, ``replace``, ``join``,
``expandtabs``, ``escape``...), or a string cut into pieces (``split``, ``splitlines``, ``|list``,
``|wordcount``, ``|urlize``...: an upper bound of the pieces, as iterations). The sandbox
(``template_sandbox``) calls these from its call hook and wraps every Jinja filter with
:func:`checked_filter`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from router.template_budget import (
    Budget,
    TemplateLimitError,
    current,
    escape_size,
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


METHOD_CHECKS: dict[str, Callable[[Budget, Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]] = {
    "ljust": _width, "rjust": _width, "center": _width, "zfill": _width, "to_bytes": _to_bytes,
    "expandtabs": _expandtabs, "replace": _replace, "join": _join, "translate": _translate,
    "split": _split, "rsplit": _split, "splitlines": _splitlines,
}


# -- Jinja's own filters ---------------------------------------------------------------------------

def checked_filter(env: Any, name: str, f: Callable[..., Any]) -> Callable[..., Any]:
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
