"""ResponseStore (bounded LRU + TTL) and the previous_response_id conversation helpers."""

from __future__ import annotations

from typing import Any

import pytest

from router.canonical import (
    CanonicalRequest,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from router.response_store import ResponseStore, apply_previous, conversation_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def msg(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


# --- ResponseStore -------------------------------------------------------------------------------


def test_put_get_roundtrip() -> None:
    store = ResponseStore()
    store.put("resp_1", "sys", [msg("user", "hi")])
    assert store.get("resp_1") == ("sys", [msg("user", "hi")])
    assert store.get("resp_missing") is None
    assert len(store) == 1


def test_stored_copy_is_isolated() -> None:
    store = ResponseStore()
    messages = [msg("user", "hi")]
    store.put("r", None, messages)
    messages[0]["content"][0]["text"] = "changed"
    got = store.get("r")
    assert got == (None, [msg("user", "hi")])
    got[1].append(msg("user", "more"))  # type: ignore[index]
    assert store.get("r") == (None, [msg("user", "hi")])


LRU_CASES: list[tuple[str, list[tuple[str, str]], list[str], list[str]]] = [
    ("oldest_evicted", [("put", "a"), ("put", "b"), ("put", "c")], ["b", "c"], ["a"]),
    ("get_refreshes", [("put", "a"), ("put", "b"), ("get", "a"), ("put", "c")], ["a", "c"], ["b"]),
    ("overwrite_refreshes", [("put", "a"), ("put", "b"), ("put", "a"), ("put", "c")], ["a", "c"], ["b"]),
    ("miss_does_not_count", [("put", "a"), ("get", "x"), ("put", "b")], ["a", "b"], ["x"]),
]


@pytest.mark.parametrize(
    ("ops", "present", "absent"), [c[1:] for c in LRU_CASES], ids=[c[0] for c in LRU_CASES]
)
def test_lru_eviction(ops: list[tuple[str, str]], present: list[str], absent: list[str]) -> None:
    store = ResponseStore(max_items=2)
    for op, key in ops:
        if op == "put":
            store.put(key, None, [msg("user", key)])
        else:
            store.get(key)
    assert len(store) == len(present)
    for key in present:
        assert store.get(key) == (None, [msg("user", key)])
    for key in absent:
        assert store.get(key) is None


TTL_CASES = [
    ("fresh", 59.9, True),
    ("expired_at_ttl", 60.0, False),
    ("expired_later", 500.0, False),
]


@pytest.mark.parametrize(("elapsed", "alive"), [c[1:] for c in TTL_CASES], ids=[c[0] for c in TTL_CASES])
def test_ttl(elapsed: float, alive: bool) -> None:
    clock = FakeClock()
    store = ResponseStore(ttl=60, clock=clock)
    store.put("r", "s", [])
    clock.now += elapsed
    assert (store.get("r") is not None) is alive
    assert len(store) == (1 if alive else 0)  # expired entries are dropped on access


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_items": 0}, "max_items"), ({"ttl": 0}, "ttl"), ({"ttl": -1}, "ttl")],
    ids=["zero_items", "zero_ttl", "negative_ttl"],
)
def test_invalid_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResponseStore(**kwargs)


def test_instances_do_not_share_state() -> None:
    a, b = ResponseStore(), ResponseStore()
    a.put("r", None, [])
    assert b.get("r") is None


# --- conversation_after --------------------------------------------------------------------------

AFTER_CASES: list[tuple[str, list[Event], list[dict[str, Any]]]] = [
    ("text", [TextDelta("Hel"), TextDelta("lo"), Finish("stop")], [msg("assistant", "Hello")]),
    (
        "reasoning_text_calls",
        [
            ReasoningDelta("th", signature="S"),
            TextDelta("ok"),
            ToolCallStart(0, "c1", "f"),
            ToolCallDelta(0, "{}"),
            Usage(1, 2),
        ],
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "text": "th", "signature": "S"},
                    {"type": "text", "text": "ok"},
                    {"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"},
                ],
            }
        ],
    ),
    ("nothing_produced", [Finish("stop")], []),
    ("other_choice_ignored", [TextDelta("a"), TextDelta("b", choice=1)], [msg("assistant", "a")]),
    ("only_other_choice", [TextDelta("b", choice=1)], []),
]


@pytest.mark.parametrize(("events", "added"), [c[1:] for c in AFTER_CASES], ids=[c[0] for c in AFTER_CASES])
def test_conversation_after(events: list[Event], added: list[dict[str, Any]]) -> None:
    request = CanonicalRequest(model="m", messages=[msg("user", "q")])
    result = conversation_after(request, events)
    assert result == [msg("user", "q"), *added]
    assert request.messages == [msg("user", "q")]  # not mutated


# --- apply_previous ------------------------------------------------------------------------------

PREVIOUS = [
    msg("user", "weather?"),
    {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": "{}"}]},
]


def tool_result(call_id: str, name: str | None) -> dict[str, Any]:
    return {
        "role": "tool",
        "content": [
            {"type": "tool_result", "tool_call_id": call_id, "name": name, "content": "21C", "is_error": False}
        ],
    }


APPLY_CASES: list[tuple[str, str | None, str | None, list[dict[str, Any]], str | None, list[dict[str, Any]]]] = [
    ("system_from_store", None, "stored", [msg("user", "next")], "stored", [*PREVIOUS, msg("user", "next")]),
    ("request_system_wins", "mine", "stored", [msg("user", "next")], "mine", [*PREVIOUS, msg("user", "next")]),
    ("no_system_anywhere", None, None, [], None, PREVIOUS),
    ("tool_name_filled", None, None, [tool_result("c1", None)], None, [*PREVIOUS, tool_result("c1", "get_weather")]),
    ("tool_name_kept", None, None, [tool_result("c1", "own")], None, [*PREVIOUS, tool_result("c1", "own")]),
    ("unknown_call_stays_none", None, None, [tool_result("zz", None)], None, [*PREVIOUS, tool_result("zz", None)]),
]


@pytest.mark.parametrize(
    ("req_system", "stored_system", "messages", "system", "expected"),
    [c[1:] for c in APPLY_CASES],
    ids=[c[0] for c in APPLY_CASES],
)
def test_apply_previous(
    req_system: str | None,
    stored_system: str | None,
    messages: list[dict[str, Any]],
    system: str | None,
    expected: list[dict[str, Any]],
) -> None:
    request = CanonicalRequest(model="m", messages=messages, system=req_system, temperature=0.5)
    before = [dict(m) for m in messages]
    result = apply_previous(request, (stored_system, PREVIOUS))
    assert result is not request
    assert result.system == system
    assert result.messages == expected
    assert result.temperature == 0.5 and result.model == "m"
    assert request.messages == before  # the original request is untouched


def test_store_roundtrip_continues_conversation() -> None:
    store = ResponseStore()
    first = CanonicalRequest(model="m", messages=[msg("user", "hi")], system="sys")
    store.put("resp_1", first.system, conversation_after(first, [TextDelta("hello")]))
    stored = store.get("resp_1")
    assert stored is not None
    second = apply_previous(CanonicalRequest(model="m", messages=[msg("user", "again")]), stored)
    assert second.system == "sys"
    assert second.messages == [msg("user", "hi"), msg("assistant", "hello"), msg("user", "again")]
