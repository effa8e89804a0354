"""SignatureMemory: tool-call id -> signature, per client key, bounded by entries, bytes and age."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.signature_memory import SignatureMemory
from tests.conftest import start_gateway


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_remember_and_recall() -> None:
    m = SignatureMemory(10)
    m.remember("alice", [("call_1", "sig1"), ("call_2", "sig2")])
    assert (m.recall("alice", "call_1"), m.recall("alice", "call_2"), len(m)) == ("sig1", "sig2", 2)
    assert m.recall("alice", "call_3") is None


def test_client_keys_are_isolated() -> None:
    m = SignatureMemory(10)
    m.remember("alice", [("call_1", "a")])
    m.remember("bob", [("call_1", "b")])  # the same id under another key neither reads nor overwrites
    assert (m.recall("alice", "call_1"), m.recall("bob", "call_1"), m.recall(None, "call_1")) == ("a", "b", None)


def test_least_recently_used_go_first() -> None:
    m = SignatureMemory(2)
    m.remember(None, [("a", "1"), ("b", "2")])
    assert m.recall(None, "a") == "1"  # a is now the most recent
    m.remember(None, [("c", "3")])
    assert (m.recall(None, "a"), m.recall(None, "b"), m.recall(None, "c")) == ("1", None, "3")


def test_time_to_live() -> None:
    clock = Clock()
    m = SignatureMemory(10, ttl=60, clock=clock)
    m.remember(None, [("a", "1")])
    clock.now += 59
    assert m.recall(None, "a") == "1"
    clock.now += 1
    assert m.recall(None, "a") is None and len(m) == 0


def test_bytes_are_bounded() -> None:
    m = SignatureMemory(100, max_bytes=100)
    m.remember(None, [("a", "x" * 40), ("b", "y" * 40)])
    m.remember(None, [("c", "z" * 40)])  # over 100 bytes: the oldest goes
    assert (m.recall(None, "a"), m.recall(None, "c")) == (None, "z" * 40)
    m.remember(None, [("huge", "s" * 200)])  # larger than the whole budget: not kept, nothing evicted
    assert m.recall(None, "huge") is None and m.recall(None, "c") == "z" * 40


def test_resize_keeps_what_fits() -> None:
    m = SignatureMemory(3)
    m.remember(None, [("a", "1"), ("b", "2"), ("c", "3")])
    m.resize(2, None)
    assert (m.recall(None, "a"), m.recall(None, "b"), m.recall(None, "c")) == (None, "2", "3")


@pytest.mark.parametrize("kwargs,message", [({"max_items": 0}, "max_items"), ({"ttl": 0}, "ttl")])
def test_invalid_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SignatureMemory(**{"max_items": 5, **kwargs})  # type: ignore[arg-type]


async def test_the_gateway_sizes_it_with_the_response_store(config_dir: Path) -> None:
    server = config_dir / "00-server.yaml"
    server.write_text(server.read_text().replace("server:\n", "server:\n  response_store: {max_items: 7, ttl: 10m}\n"))
    h = await start_gateway(config_dir)
    try:
        memory = h.gateway.stores.signatures
        assert memory is not None
        memory.remember(None, [(f"c{i}", "s") for i in range(10)])
        assert len(memory) == 7
        server.write_text(server.read_text().replace("max_items: 7", "max_items: 0"))
        assert await h.gateway.reload("test")
        assert h.gateway.stores.signatures is None
        assert h.gateway.stores.responses is None
    finally:
        await h.close()
