"""Typed readers of request-body fields: one set for every client codec.

A reader takes an object, a key and where the object sits (``at``: the object's dotted path, "" for
the body), treats ``null`` as absent, and raises only :class:`BadRequest` naming the field: its
``param`` is the field's path (``at.key``). The client APIs differ only in what a :class:`Fields`
subclass says: how an error is worded (clients and their SDKs show these messages), how a list
item is named, whether ``2.0`` is an integer, whether a number keeps its JSON type, how a key may be
spelled. Use the instances at the end (``OPENAI_CHAT``, ``OPENAI_RESPONSES``, ``ANTHROPIC``, ``GEMINI``;
Ollama reads with ``ANTHROPIC``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from router.canonical import JSON_INT_MAX
from router.errors import BadRequest

_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def join(at: str, key: str) -> str:
    """The path of field ``key`` of the object at ``at``."""
    return f"{at}.{key}" if at else key


class Fields:
    """The readers, worded as Anthropic words errors: ``messages.0.role: expected a string, got number``."""

    __slots__ = ()
    item = "{}.{}"  # a list item's path from the list's path and the item's index
    integral_floats = True  # 2.0 reads as the integer 2
    float_numbers = True  # a number reads as a float (else as sent: 1 stays 1)

    # --- how errors are worded (run only when a field is wrong) ---------------------------------

    def wrong(self, path: str, what: str, value: Any) -> BadRequest:
        """A value (a field, a list item, a body) of the wrong type."""
        return BadRequest(f"{path}: expected {what}, got {type_name(value)}", param=path)

    def wrong_field(self, at: str, key: str, what: str, value: Any) -> BadRequest:
        return self.wrong(join(at, key), what, value)

    def missing(self, at: str, key: str, what: str, value: Any) -> BadRequest:
        """A required field absent (``value`` None), of the wrong type, or empty."""
        if value is None:
            path = join(at, key)
            return BadRequest(f"{path}: field required", param=path)
        return self.wrong_field(at, key, what, value)

    def below(self, at: str, key: str, minimum: int) -> BadRequest:
        path = join(at, key)
        return BadRequest(f"{path}: must be >= {minimum}", param=path)

    def too_big(self, at: str, key: str) -> BadRequest:
        path = join(at, key)
        return BadRequest(f"{path}: must be at most {JSON_INT_MAX} in magnitude", param=path)

    def out_of_range(self, at: str, key: str, low: float, high: float) -> BadRequest:
        path = join(at, key)
        return BadRequest(f"{path}: must be between {low:g} and {high:g}", param=path)

    # --- values ------------------------------------------------------------------------------------

    def get(self, o: Mapping[str, Any], key: str) -> Any:
        return o.get(key)

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        """``value`` itself, which must be a JSON object."""
        if not isinstance(value, dict):
            raise self.wrong(path, "an object", value)
        return value

    def array(self, value: Any, path: str) -> list[Any]:
        """``value`` itself, which must be a JSON array."""
        if not isinstance(value, list):
            raise self.wrong(path, "an array", value)
        return value

    # --- fields ------------------------------------------------------------------------------------

    def _typed(self, o: Mapping[str, Any], key: str, at: str, kind: type, what: str) -> Any:
        value = self.get(o, key)
        if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
            return value
        raise self.wrong_field(at, key, what, value)

    def opt_str(self, o: Mapping[str, Any], key: str, at: str = "") -> str | None:
        value: str | None = self._typed(o, key, at, str, "a string")
        return value

    def opt_obj(self, o: Mapping[str, Any], key: str, at: str = "") -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._typed(o, key, at, dict, "an object")
        return value

    def opt_list(self, o: Mapping[str, Any], key: str, at: str = "") -> list[Any] | None:
        value: list[Any] | None = self._typed(o, key, at, list, "an array")
        return value

    def opt_bool(self, o: Mapping[str, Any], key: str, at: str = "") -> bool | None:
        value = self.get(o, key)
        if value is None or isinstance(value, bool):
            return value
        raise self.wrong_field(at, key, "a boolean", value)

    def req_str(self, o: Mapping[str, Any], key: str, at: str = "", *, empty: bool = True) -> str:
        """A string that must be there (and not empty unless ``empty``)."""
        value = self.get(o, key)
        if not isinstance(value, str) or (not value and not empty):
            raise self.missing(at, key, "a string", value)
        return value

    def req_obj(self, o: Mapping[str, Any], key: str, at: str = "") -> dict[str, Any]:
        value = self.get(o, key)
        if not isinstance(value, dict):
            raise self.missing(at, key, "an object", value)
        return value

    def req_list(self, o: Mapping[str, Any], key: str, at: str = "") -> list[Any]:
        value = self.get(o, key)
        if not isinstance(value, list):
            raise self.missing(at, key, "an array", value)
        return value

    def str_list(self, o: Mapping[str, Any], key: str, at: str = "") -> list[str] | None:
        """An array of strings (None when absent)."""
        items = self.opt_list(o, key, at)
        if items is None:
            return None
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.wrong(self.item.format(join(at, key), i), "a string", item)
        return items

    def opt_int(self, o: Mapping[str, Any], key: str, at: str = "", *, minimum: int | None = None,
                required: bool = False) -> int | None:
        """An integer of at most ``JSON_INT_MAX`` in magnitude, at least ``minimum`` when given."""
        value = self.get(o, key)
        if value is None:
            if required:
                raise self.missing(at, key, "an integer", None)
            return None
        if self.integral_floats and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_field(at, key, "an integer", value)
        if minimum is not None and value < minimum:
            raise self.below(at, key, minimum)
        if abs(value) > JSON_INT_MAX:
            raise self.too_big(at, key)
        return value

    def opt_number(self, o: Mapping[str, Any], key: str, at: str = "", *, low: float | None = None,
                   high: float | None = None) -> float | None:
        """A number, within ``low``..``high`` when given."""
        value = self.get(o, key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.wrong_field(at, key, "a number", value)
        if low is not None and high is not None and not low <= value <= high:
            raise self.out_of_range(at, key, low, high)
        return float(value) if self.float_numbers else value


class GeminiFields(Fields):
    """Gemini's: Anthropic's wording, list items as ``path[i]``, numbers kept as sent, and camelCase
    keys that may come in snake_case (the REST API accepts both; google-genai sends camelCase)."""

    __slots__ = ()
    item = "{}[{}]"
    float_numbers = False

    def get(self, o: Mapping[str, Any], key: str) -> Any:
        """``o[key]`` or ``o[snake(key)]``; None when neither is present."""
        value = o.get(key)
        return o.get(snake(key)) if value is None else value


def snake(key: str) -> str:
    """``maxOutputTokens`` → ``max_output_tokens``."""
    return _CAMEL_HUMP.sub("_", key).lower()


class OpenAIFields(Fields):
    """OpenAI's wording: ``'temperature' must be a number``; 2.0 is not an integer. Chat Completions
    names a field by its key in the message (``param`` has its path), Responses by its path."""

    __slots__ = ("_by_path", "_magnitude")
    integral_floats = False

    def __init__(self, *, by_path: bool, magnitude: bool) -> None:
        self._by_path = by_path
        self._magnitude = magnitude  # the integer limit is said to be on magnitude (integers may be negative)

    def _say(self, at: str, key: str, text: str) -> BadRequest:
        name = join(at, key) if self._by_path else key
        return BadRequest(f"'{name}' {text}", param=join(at, key))

    def wrong(self, path: str, what: str, value: Any) -> BadRequest:
        return BadRequest(f"'{path}' must be {what}", param=path)

    def wrong_field(self, at: str, key: str, what: str, value: Any) -> BadRequest:
        return self._say(at, key, f"must be {what}")

    def missing(self, at: str, key: str, what: str, value: Any) -> BadRequest:
        return self._say(at, key, f"is required and must be {what}")

    def below(self, at: str, key: str, minimum: int) -> BadRequest:
        return self._say(at, key, f"must be at least {minimum}")

    def too_big(self, at: str, key: str) -> BadRequest:
        return self._say(at, key, f"must be at most {JSON_INT_MAX}{' in magnitude' if self._magnitude else ''}")

    def out_of_range(self, at: str, key: str, low: float, high: float) -> BadRequest:
        return self._say(at, key, f"must be between {low:g} and {high:g}")


OPENAI_CHAT = OpenAIFields(by_path=False, magnitude=True)  # Chat Completions and legacy Completions
OPENAI_RESPONSES = OpenAIFields(by_path=True, magnitude=False)  # its integers are all positive
ANTHROPIC = Fields()
GEMINI = GeminiFields()
