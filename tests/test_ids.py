"""router.ids: unique, well-formed ids across batch refills."""

from __future__ import annotations

import re

from router.ids import BATCH, IdGenerator


def test_ids_are_unique_hex_and_survive_refills() -> None:
    g = IdGenerator()
    ids = [g.new("resp_") for _ in range(3 * BATCH // 12 + 5)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"resp_[0-9a-f]{24}", i) for i in ids)
    assert re.fullmatch(r"[0-9a-f]{16}", g.new("", 8))


def test_two_generators_do_not_repeat_each_other() -> None:
    assert {IdGenerator().new() for _ in range(50)}.__len__() == 50
