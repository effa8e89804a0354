"""router.lru.BoundedLRU: the bounds both in-process memories rely on."""

from __future__ import annotations

import pytest

from router.lru import BoundedLRU


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lru(max_items: int = 10, ttl: float | None = None, max_bytes: int = 1000, clock: Clock | None = None
        ) -> BoundedLRU[str]:
    return BoundedLRU(lambda k, v: len(k) + len(v), max_items, ttl, max_bytes, clock or Clock())


def test_least_recently_used_goes_first() -> None:
    m = lru(max_items=2)
    m.put("a", "1")
    m.put("b", "2")
    assert m.get("a") == "1"  # a is now the most recent
    m.put("c", "3")
    assert (m.get("a"), m.get("b"), m.get("c")) == ("1", None, "3")


def test_bytes_are_bounded_and_an_oversized_value_evicts_nothing() -> None:
    m = lru(max_bytes=10)
    m.put("a", "1234")  # 5
    m.put("b", "1234")  # 10
    m.put("c", "1")  # 12 > 10: a goes
    assert (m.get("a"), m.get("b"), m.get("c")) == (None, "1234", "1")
    m.put("big", "x" * 20)
    assert m.get("big") is None and m.get("b") == "1234" and len(m) == 2


def test_replacing_a_key_recounts_its_size() -> None:
    m = lru(max_bytes=10)
    for _ in range(50):
        m.put("a", "123456789")  # 10 each time: never more than the budget
    m.put("b", "")
    assert len(m) == 1 and m.get("b") == ""


def test_expiry_and_resize() -> None:
    clock = Clock()
    m = lru(ttl=60, clock=clock)
    m.put("a", "1")
    clock.now = 59.9
    assert m.get("a") == "1"
    clock.now = 60.0
    assert m.get("a") is None and len(m) == 0
    for k in "abcde":
        m.put(k, "1")
    m.resize(2, None, 1000)
    assert [m.get(k) for k in "abcde"] == [None, None, None, "1", "1"]


@pytest.mark.parametrize("items, ttl", [(0, None), (1, 0.0), (1, -1.0)], ids=["zero_items", "zero_ttl", "negative_ttl"])
def test_bad_bounds_are_refused(items: int, ttl: float | None) -> None:
    with pytest.raises(ValueError):
        lru(max_items=items, ttl=ttl)
