"""The render budget of Jinja templates: loop iterations, produced size and time, per request.

One budget covers every template leaf of one request render (url, query, headers and body of one
attempt). It lives in a context variable while the render runs; the sandbox's hooks
(``template_sandbox``) charge it: each loop iteration and call, each string or list an operator,
filter or method builds, each piece of text output. Sizes are predicted and checked *before* a value
is built wherever they can be, so ``'x' * 10**12`` fails at once instead of allocating.

The same predictions run at compile time over constant sub-expressions (``9 ** (9 ** 8)``), so such
a template is a config error instead of a frozen ``router check``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from jinja2.exceptions import TemplateRuntimeError

T = TypeVar("T")

# Integers beyond this many bits are refused: no request needs them, Python cannot even print them
# (4300 digits), and multiplying huge ones is where a tiny template spends minutes.
MAX_INT_BITS = 10_000
_SIZED = (str, bytes, list, tuple, dict)
_SEQ = (str, bytes, list, tuple)


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """``server.template_limits``: what one request's template render may spend."""

    max_iterations: int = 100_000  # loop iterations, calls, items walked by filters or built
    max_output_chars: int = 4 * 1024 * 1024  # characters and list items built or output, in total
    max_time: float = 1.0  # seconds; 0: no time limit


DEFAULT_LIMITS = TemplateLimits()

# Response header templates render on the event loop (on every response, error responses included):
# whatever server.template_limits says, a runaway one may hold the loop this long at most.
HEADER_MAX_TIME = 0.05
HEADER_MAX_ITERATIONS = 10_000
HEADER_MAX_OUTPUT_CHARS = 64 * 1024


def header_limits(limits: TemplateLimits) -> TemplateLimits:
    """The budget of the response_headers template: ``limits``, capped to a few milliseconds' work."""
    return TemplateLimits(min(limits.max_iterations, HEADER_MAX_ITERATIONS),
                          min(limits.max_output_chars, HEADER_MAX_OUTPUT_CHARS),
                          min(limits.max_time, HEADER_MAX_TIME) if limits.max_time > 0 else HEADER_MAX_TIME)


class TemplateLimitError(TemplateRuntimeError):
    """A template went over its render budget (or a constant in it is too large to compute)."""


class Budget:
    """What one render has spent so far; every method raises TemplateLimitError when over."""

    __slots__ = ("limits", "iterations", "chars", "deadline", "stop")

    def __init__(self, limits: TemplateLimits, deadline: float | None = None, stop: threading.Event | None = None):
        self.limits = limits
        self.iterations = 0
        self.chars = 0
        if deadline is None:
            deadline = time.monotonic() + limits.max_time if limits.max_time > 0 else math.inf
        self.deadline = deadline
        self.stop = stop  # set when the gateway closes: every clock check then ends the render

    def tick(self, n: int = 1) -> bool:
        """Charge ``n`` iterations (and check the clock); True, so it can sit inside an expression."""
        self.iterations += n
        if self.iterations > self.limits.max_iterations:
            raise TemplateLimitError(f"render budget exceeded: more than {self.limits.max_iterations} loop "
                                     "iterations, calls and items (server.template_limits.max_iterations)")
        self.in_time()
        return True

    def need(self, size: int, what: str = "a value") -> None:
        """Refuse building something of ``size`` characters/items when it does not fit."""
        if size > self.limits.max_output_chars - self.chars:
            raise TemplateLimitError(
                f"render budget exceeded: {what} of {size} characters/items would pass "
                f"server.template_limits.max_output_chars ({self.limits.max_output_chars})")

    def need_items(self, n: int, what: str) -> None:
        """Refuse building ``n`` items (a list a call would return) when they do not fit the
        iterations left (walking them costs one each) or the size budget."""
        if n > self.limits.max_iterations - self.iterations:
            raise TemplateLimitError(f"render budget exceeded: {what} of up to {n} items would pass "
                                     f"server.template_limits.max_iterations ({self.limits.max_iterations})")
        self.need(n, what)

    def produce(self, size: int, what: str = "a value") -> None:
        self.need(size, what)
        self.chars += size
        self.in_time()

    def in_time(self) -> None:
        if time.monotonic() > self.deadline or (self.stop is not None and self.stop.is_set()):
            self._late()

    def _late(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise TemplateLimitError("render stopped: the gateway is shutting down")
        raise TemplateLimitError(f"render budget exceeded: took longer than {self.limits.max_time:g}s "
                                 "(server.template_limits.max_time)")

    def result(self, value: T) -> T:
        """Charge a value some call built: its length, and for a container its items as iterations
        too (walking a huge list, e.g. to print it, costs per item)."""
        if isinstance(value, _SIZED):
            n = len(value)
            self.produce(n, f"a {type(value).__name__}")
            if not isinstance(value, (str, bytes)):
                self.tick(n)
        return value


_CURRENT: ContextVar[Budget | None] = ContextVar("template_budget", default=None)
# the stop signal of the render pool running this thread's renders (``render_pool``)
_STOP: ContextVar[threading.Event | None] = ContextVar("template_stop", default=None)


def current(limits: TemplateLimits = DEFAULT_LIMITS) -> Budget:
    """The budget of the render in progress; a hook running outside any render gets a fresh one
    (so every hook is bounded, if less tightly)."""
    budget = _CURRENT.get()
    return budget if budget is not None else Budget(limits)


def within_budget(limits: TemplateLimits, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` with one budget for everything it renders (reuses a budget already active)."""
    if _CURRENT.get() is not None:
        return fn(*args)
    token = _CURRENT.set(Budget(limits, stop=_STOP.get()))
    try:
        return fn(*args)
    finally:
        _CURRENT.reset(token)


def stoppable(stop: threading.Event, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn``; every render budget it opens ends its render once ``stop`` is set."""
    token = _STOP.set(stop)
    try:
        return fn(*args, **kwargs)
    finally:
        _STOP.reset(token)


def charged_range(*args: int) -> range:
    """``range`` for templates: one longer than ``max_iterations`` could never be walked, so it is
    refused at once; its items are charged where they are walked (loops, filters)."""
    r = range(*args)
    limit = current().limits.max_iterations
    try:
        n = len(r)
    except OverflowError:  # more than 2**63 items
        n = limit + 1
    if n > limit:
        raise TemplateLimitError(f"render budget exceeded: range() of more than {limit} items "
                                 "(server.template_limits.max_iterations)")
    return r


# -- size predictions (shared by render-time checks and the compile-time constant check) ------------

def _int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(f"integer result too large (about {bits} bits; templates allow {MAX_INT_BITS})")


def _is_int(v: Any) -> bool:
    return isinstance(v, int)  # bool included: True * 'x' is 'x'


def binop_size(op: str, left: Any, right: Any) -> int:
    """Characters/items ``left <op> right`` will have (0 for numbers), computed without building it.

    Raises TemplateLimitError for an integer result beyond MAX_INT_BITS."""
    size = _BINOP_SIZES.get(op)
    return size(left, right) if size is not None else 0


def _mul_size(left: Any, right: Any) -> int:
    if isinstance(left, _SEQ) and _is_int(right):
        return len(left) * max(int(right), 0)
    if _is_int(left) and isinstance(right, _SEQ):
        return len(right) * max(int(left), 0)
    if _is_int(left) and _is_int(right):
        _int_bits(left.bit_length() + right.bit_length())
    return 0


def _pow_size(left: Any, right: Any) -> int:
    if _is_int(left) and _is_int(right) and right > 0 and left not in (0, 1, -1):
        _int_bits(left.bit_length() * right)
    return 0


def _add_size(left: Any, right: Any) -> int:
    if isinstance(left, _SEQ) and isinstance(right, _SEQ):
        return len(left) + len(right)
    if _is_int(left) and _is_int(right):
        _int_bits(max(left.bit_length(), right.bit_length()) + 1)
    return 0


def _mod_size(left: Any, right: Any) -> int:
    if isinstance(left, (str, bytes)):
        return printf_size(left if isinstance(left, str) else left.decode("latin-1"), right)
    return 0


_BINOP_SIZES: dict[str, Callable[[Any, Any], int]] = {"*": _mul_size, "**": _pow_size, "+": _add_size, "%": _mod_size}


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def printf_size(fmt: str, args: Any) -> int:
    """A lower bound of ``fmt % args``'s length: the text plus every width and precision; ``*``
    widths are refused (their size would come from the arguments)."""
    total = len(fmt)
    for m in _PRINTF.finditer(fmt):
        for spec in (m.group(1), m.group(2)):
            if spec == "*":
                raise TemplateLimitError("'*' widths in % formatting are not supported in templates")
            if spec:
                total += int(spec)
    return total


_SPEC_NUMBER = re.compile(r"\d+")


def format_spec_size(spec: str) -> int:
    """The numbers in a ``str.format`` field spec (width, precision) bound what the field produces."""
    return sum(int(n) for n in _SPEC_NUMBER.findall(spec))


# -- predictions for calls that can build much more than they are given -----------------------------

def replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    if not isinstance(s, (str, bytes)):
        s = str(s)
    if not isinstance(old, type(s)) or not isinstance(new, type(s)):
        return len(s)
    n = len(s) + 1 if not old else s.count(old)
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(0, len(new) - len(old))


def join_size(sep: Any, items: list[Any]) -> int:
    return len(sep) * max(0, len(items) - 1) if isinstance(sep, (str, bytes)) else 0


def tabs_size(s: str | bytes, tabsize: Any = 8) -> int:
    tab = "\t" if isinstance(s, str) else b"\t"
    return len(s) + s.count(tab) * max(0, tabsize if _is_int(tabsize) else 8)  # type: ignore[arg-type]  # _is_int checked it


def translate_size(s: str, table: Any) -> int:
    longest = 1
    if isinstance(table, dict):
        longest = max([len(v) for v in table.values() if isinstance(v, str)] + [1])
    return len(s) * longest


# -- predictions for calls that cut a string into pieces (a list of n strings costs ~60 bytes each) ---

_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # where str.splitlines cuts
_SPACES = "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
          "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # what str.split() cuts at (str.isspace)


def _count_any(s: str | bytes, chars: str) -> int:
    """Occurrences of any of ``chars`` in ``s``: counted in C, nothing allocated."""
    if isinstance(s, bytes):
        return sum(s.count(c.encode("latin-1")) for c in chars if ord(c) < 128)
    return sum(s.count(c) for c in chars)


def words_bound(s: str | bytes) -> int:
    """At most how many words (runs of non-separators) ``s`` holds, whatever separates them."""
    return (len(s) + 1) // 2


def split_bound(s: str | bytes, sep: Any = None, maxsplit: Any = -1) -> int:
    """At most how many pieces ``s.split(sep, maxsplit)`` returns; exact for a separator given, and
    the whitespace counted (in C) only when the length alone does not make it small."""
    if isinstance(sep, (str, bytes)) and sep and type(sep) is type(s):
        n = s.count(sep) + 1  # type: ignore[arg-type]  # sep has the type of s, checked above
    else:
        n = words_bound(s)
        if n > 1000:
            n = min(n, _count_any(s, _SPACES) + 1)
    return min(n, maxsplit + 1) if isinstance(maxsplit, int) and maxsplit >= 0 else n


def lines_bound(s: str | bytes) -> int:
    """At most how many lines ``s.splitlines()`` returns."""
    return len(s) + 1 if len(s) <= 1000 else _count_any(s, _LINE_BREAKS) + 1


def escape_size(s: str) -> int:
    """The length of ``s`` HTML-escaped (``<`` becomes ``&lt;``, ``"`` ``&#34;``...)."""
    return len(s) + 3 * (s.count("<") + s.count(">")) + 4 * s.count("&") + 4 * (s.count("'") + s.count('"'))


def materialized(items: Any) -> list[Any]:
    """An iterable as a list, each item charged as an iteration (a join or sum must see them all)."""
    budget = current()
    if isinstance(items, (*_SEQ, dict, range)):
        budget.tick(len(items))
        return list(items)
    out = []
    for item in items:
        budget.tick()
        out.append(item)
    return out
