"""Canonical helpers: per-call signatures in ``aggregate`` and ``fill_call_signatures``."""

from __future__ import annotations

from typing import Any

import pytest

from router.canonical import (
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    aggregate,
    fill_call_signatures,
)


def test_aggregate_gives_each_call_the_signature_sent_before_it() -> None:
    events = [ReasoningDelta("hm"), ReasoningDelta("", signature="S1"), ToolCallStart(0, "a", "f"),
              ToolCallDelta(0, "{}"), ToolCallStart(1, "b", "g"),  # a parallel call: no signature of its own
              ReasoningDelta("", signature="S2", choice=1), ToolCallStart(0, "c", "h", choice=1), Finish("tool_calls")]
    agg = aggregate(events)
    assert [(t.id, t.signature) for t in agg.choices[0].tool_calls] == [("a", "S1"), ("b", None)]
    assert [(t.id, t.signature) for t in agg.choices[1].tool_calls] == [("c", "S2")]
    assert agg.choices[0].reasoning_signature == "S1"  # the choice-level signature is unchanged


def test_aggregate_without_signatures_leaves_calls_unsigned() -> None:
    agg = aggregate([TextDelta("x"), ToolCallStart(0, "a", "f")])
    assert agg.choices[0].tool_calls[0].signature is None


def think(text: str, sig: str | None = None) -> dict[str, Any]:
    return {"type": "thinking", "text": text, "signature": sig}


def call(cid: str) -> dict[str, Any]:
    return {"type": "tool_call", "id": cid, "name": "f", "arguments": "{}"}


TEXT = {"type": "text", "text": "let me look"}

FILL_CASES = [
    pytest.param([call("a")], {"a": "S"}, [think("", "S"), call("a")], id="bare-call"),
    pytest.param([think("why"), TEXT, call("a")], {"a": "S"}, [think("why", "S"), TEXT, call("a")],
                 id="first-call-signs-the-opening-reasoning"),
    pytest.param([call("a"), call("b")], {"b": "T"}, [call("a"), think("", "T"), call("b")], id="second-call"),
    pytest.param([think("", "KEPT"), call("a")], {"a": "S"}, [think("", "KEPT"), call("a")],
                 id="already-signed-call-untouched"),
    pytest.param([think("", "KEPT"), call("a"), call("b")], {"b": "T"},
                 [think("", "KEPT"), call("a"), think("", "T"), call("b")], id="a-signature-is-claimed-once"),
    pytest.param([call("a")], {}, [call("a")], id="unknown-signature"),
]


@pytest.mark.parametrize("parts,known,expected", FILL_CASES)
def test_fill_call_signatures(parts: list[dict[str, Any]], known: dict[str, str], expected: list[Any]) -> None:
    before = [dict(p) for p in parts]
    assert fill_call_signatures(parts, lambda c: known.get(c["id"])) == expected
    assert parts == before  # the input list and its parts are not modified
