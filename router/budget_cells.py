"""The per-request arithmetic of client budgets on the spend this process knows (``Budgets._spent``:
``[tokens, nano-dollars]`` by cell id): the check at admission and the charge when a response ends.

This module is the reference and the fallback; ``router/_speedups.c`` has the same two functions
compiled (tests/test_speedups.py checks both), and ``CELLS`` is the one ``Budgets`` uses. A plan's
``bounds`` are ``((cell id, max tokens, max nano-dollars), ...)``, built once per snapshot (a bound the
budget does not set is ``router.budgets.NEVER``).
"""

from __future__ import annotations

import sys
from types import ModuleType

from router import speedups

Bounds = tuple[tuple[str, int, int], ...]


def reached(bounds: Bounds, spent: dict[str, list[int]]) -> bool:
    """Whether a cell's spend this period is at or past one of its bounds."""
    for cell_id, max_tokens, max_nano in bounds:
        used = spent.get(cell_id)
        if used is not None and (used[0] >= max_tokens or used[1] >= max_nano):
            return True
    return False


def add(bounds: Bounds, spent: dict[str, list[int]], tokens: int, nano: int) -> None:
    """Add a finished request's use to each cell's spend."""
    for cell_id, _, _ in bounds:
        used = spent.get(cell_id)
        if used is None:
            spent[cell_id] = [tokens, nano]
        else:
            used[0] += tokens
            used[1] += nano


PYTHON: ModuleType = sys.modules[__name__]  # this module: the reference
CELLS: ModuleType = speedups.compiled() or PYTHON  # what the budgets use
