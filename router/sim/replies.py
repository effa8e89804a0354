"""Deterministic reply planning, shared by every dialect of the simulator.

Each dialect boils its request down to an ``Ask`` (what the caller wants, in neutral terms) and
renders the ``Reply`` that ``plan`` derives from it. Everything here is pure: the same ``Ask``
always gives the same ``Reply``, so tests can predict text, tool arguments and token counts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

SNIPPET_CHARS = 60
RESULT_CHARS = 100
FILLER = "This is a simulated reply from the bundled upstream."
# Words in the last user turn that make the simulator call a tool when tools are offered.
TOOL_TRIGGERS = ("tool", "weather")
_TOKEN = re.compile(r"\S+\s*")
_PLACE_WORDS = ("city", "location", "place", "town", "country")

Finish = Literal["stop", "length", "tool", "stop_sequence"]
ToolMode = Literal["auto", "none", "force"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One offered tool: its name and JSON-schema-like parameters (Gemini upper-case types too)."""

    name: str
    schema: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ask:
    """A request reduced to what decides the reply."""

    user_text: str = ""
    prompt_text: str = ""
    tools: tuple[ToolSpec, ...] = ()
    tool_mode: ToolMode = "auto"
    forced_name: str | None = None
    tool_result: str | None = None
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    thoughts: bool = False
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call to one of the offered tools; ``id_suffix`` is stable for the same request."""

    name: str
    args: dict[str, Any]
    id_suffix: str

    @property
    def arguments(self) -> str:
        return orjson.dumps(self.args).decode()


@dataclass(frozen=True, slots=True)
class Reply:
    """What the simulated model answers, before any dialect shapes it."""

    text: str
    finish: Finish
    prompt_tokens: int
    output_tokens: int
    tool: ToolCall | None = None
    thought: str | None = None
    thought_tokens: int = 0
    stop_sequence: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens + self.thought_tokens


def count_tokens(text: str) -> int:
    """Whitespace-separated words: crude, but stable and easy to predict in tests."""
    return len(_TOKEN.findall(text))


def digest(*parts: str) -> str:
    """A short stable hex id derived from the request, so ids repeat with the request."""
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:24]


def plan(ask: Ask) -> Reply:
    """Decide the reply for ``ask``: a tool call, a tool-result answer, JSON or echo text."""
    prompt_tokens = max(1, count_tokens(ask.prompt_text))
    thought = f"Thinking about: {ask.user_text[:SNIPPET_CHARS]}" if ask.thoughts else None
    thought_tokens = count_tokens(thought) if thought else 0
    call = _tool_call(ask)
    if call is not None:
        return Reply(text="", finish="tool", prompt_tokens=prompt_tokens,
                     output_tokens=max(1, count_tokens(call.arguments)), tool=call,
                     thought=thought, thought_tokens=thought_tokens)
    text, finish, stop_sequence = _limit(ask, _full_text(ask))
    return Reply(text=text, finish=finish, prompt_tokens=prompt_tokens,
                 output_tokens=count_tokens(text), thought=thought,
                 thought_tokens=thought_tokens, stop_sequence=stop_sequence)


def _full_text(ask: Ask) -> str:
    if ask.tool_result is not None:
        return f"Tool said: {ask.tool_result[:RESULT_CHARS]}"
    snippet = ask.user_text[:SNIPPET_CHARS]
    if ask.json_mode:
        if ask.json_schema and ask.json_schema.get("properties"):
            return orjson.dumps(build_value(ask.json_schema)).decode()
        return orjson.dumps({"echo": snippet}).decode()
    return f"Echo: {snippet} {FILLER}"


def _limit(ask: Ask, text: str) -> tuple[str, Finish, str | None]:
    """Apply stop sequences, then the token budget."""
    for stop in ask.stop:
        if stop and stop in text:
            return text[: text.index(stop)], "stop_sequence", stop
    if ask.max_tokens is not None and count_tokens(text) > ask.max_tokens:
        kept = _TOKEN.findall(text)[: max(0, ask.max_tokens)]
        return "".join(kept).rstrip(), "length", None
    return text, "stop", None


def _tool_call(ask: Ask) -> ToolCall | None:
    # A tool result in the last turn is answered in words, never with another call.
    if not ask.tools or ask.tool_mode == "none" or ask.tool_result is not None:
        return None
    lowered = ask.user_text.lower()
    wanted = ask.tool_mode == "force" or any(word in lowered for word in TOOL_TRIGGERS)
    if not wanted:
        return None
    tool = _pick(ask.tools, ask.forced_name)
    args = build_value(tool.schema)
    if not isinstance(args, dict):
        args = {}
    return ToolCall(name=tool.name, args=args, id_suffix=digest(tool.name, ask.user_text))


def _pick(tools: tuple[ToolSpec, ...], name: str | None) -> ToolSpec:
    for tool in tools:
        if tool.name == name:
            return tool
    return tools[0]


def build_value(schema: Any, name: str = "") -> Any:
    """A deterministic value satisfying the simple parts of a JSON schema.

    Objects get their required properties (all properties when none are required); strings are
    "Paris" for place-like names and "test" otherwise; numbers 1, booleans true, arrays one item.
    """
    if not isinstance(schema, dict):
        return {}
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = _type_of(schema)
    if kind == "object":
        return _build_object(schema)
    if kind == "array":
        return [build_value(schema.get("items", {"type": "string"}), name)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "Paris" if any(word in name.lower() for word in _PLACE_WORDS) else "test"


def _build_object(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    required = schema.get("required")
    names = [n for n in required if n in props] if isinstance(required, list) and required else list(props)
    return {prop: build_value(props[prop], prop) for prop in names}


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "string")
    if kind is None:
        return "object" if "properties" in schema else "string"
    return str(kind).lower()


def split_text(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` non-empty pieces that concatenate back to it.

    Whole words when there are enough of them, characters otherwise; fewer pieces only when the
    text is shorter than ``parts`` characters.
    """
    parts = max(1, parts)
    if not text:
        return []
    words = _TOKEN.findall(text)
    if "".join(words) != text or len(words) < parts:
        return _even(list(text), parts)
    return _even(words, parts)


def _even(units: list[str], parts: int) -> list[str]:
    parts = min(parts, len(units))
    n = len(units)
    return ["".join(units[i * n // parts:(i + 1) * n // parts]) for i in range(parts)]
