"""Budgets with ``state.backend: redis``: every gateway's spend adds up in Redis, and admission still
never waits for it.

Each budget's spend this period is two integer counters, tokens and nano-dollars, under
``{<prefix>:budget}:<scope>:<owner>:<period>:<label>#tokens`` (``#nano``); they expire a day after
their period ends. Every ``state.sync_interval`` one pipelined round trip sends this process's
charges since the last sync (INCRBY, batched per counter) and reads every budget of the snapshot
serving now back (one MGET: the keys share a hash tag). Admission reads the local view: the totals
as of the last sync plus this process's own charges since. So a charge made here counts here at once,
and one made by another gateway counts here within two sync intervals (its sync sends it, ours reads
it) plus the round trips.

When Redis cannot be reached the charges are kept (bounded: ``router.budgets.MAX_PENDING`` counters,
and those of one counter add up) and sent when it is back; meanwhile admission uses the local view
(``state.limits_when_down: open``, the default) or answers a 503 (``closed``), as the rate limits do.
A sync whose reply is lost (a timeout after Redis applied it) keeps its charges too: they are sent
again, so a rare fault counts a charge twice, never drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from router.budgets import BudgetCell, Budgets
from router.shared_state import FAULTS, SharedState

log = logging.getLogger("router.budgets")

KEEP_AFTER_PERIOD_S = 86_400  # a counter outlives its period by a day (late charges, clocks apart)
FIELDS = ("tokens", "nano")


class BudgetSync:
    """The background sync of one shared state's budgets (see the module docstring); ``cells``: every
    budget of the snapshot serving now."""

    def __init__(self, budgets: Budgets, shared: SharedState, cells: Callable[[], Iterable[BudgetCell]]) -> None:
        self.budgets = budgets
        self.shared = shared
        self.cells = cells
        self.prefix = shared.settings.prefix
        self.up: bool | None = None  # the last sync's outcome (None: none yet)
        self.active = False  # started and not closed: its health decides whether admission refuses
        self._lock = asyncio.Lock()  # one sync at a time (the loop's, a reload's)
        self._loop: asyncio.Task[None] | None = None

    def counter_key(self, name: str, what: str) -> str:
        return f"{{{self.prefix}:budget}}:{name}#{what}"

    def start(self) -> None:
        self.budgets.sharing = self.active = True
        self._loop = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.shared.settings.sync_interval)

    async def refresh(self) -> None:
        """One sync, bounded like the shared state's commands; a fault keeps the charges for the next."""
        settings = self.shared.settings
        async with self._lock:
            try:
                await asyncio.wait_for(self.sync(), settings.connect_timeout + 2 * settings.timeout + 0.5)
            except FAULTS as e:  # a timeout too
                self._mark(False, e)
            else:
                self._mark(True)

    async def sync(self) -> None:
        """Send the pending charges and read every budget's totals back, in one pipelined round trip."""
        budgets = self.budgets
        budgets.now()
        cells = {c.id: c for c in self.cells()}
        labels = {kind: p.label for kind, p in budgets.periods.items()}
        sent, budgets.pending = budgets.pending, {}
        try:
            replies = await self._exchange(sent, [f"{cell_id}:{labels[c.budget.period]}"
                                                  for cell_id, c in cells.items()]) if sent or cells else []
        except BaseException:
            budgets.merge(sent)  # not sent (or not known to be): next time
            raise
        totals = {cell_id: (_int(replies[2 * i]), _int(replies[2 * i + 1])) for i, cell_id in enumerate(cells)}
        budgets.adopt(totals, labels)

    async def _exchange(self, sent: dict[str, list[int]], read: list[str]) -> list[Any]:
        pipe = self.shared.client.pipeline(transaction=False)
        for name, (tokens, nano, ttl) in sent.items():
            for what, amount in zip(FIELDS, (tokens, nano), strict=True):
                pipe.incrby(self.counter_key(name, what), amount)
                pipe.expire(self.counter_key(name, what), ttl + KEEP_AFTER_PERIOD_S)
        if read:
            pipe.mget([self.counter_key(name, what) for name in read for what in FIELDS])
        replies = await pipe.execute()
        return list(replies[-1]) if read else []

    def _mark(self, up: bool, error: BaseException | None = None) -> None:
        """The view's health: while it cannot be refreshed, ``limits_when_down: closed`` refuses."""
        if up != self.up:
            if up and self.up is False:  # back (the first success says nothing: the state's own line does)
                log.info("budgets: shared spend read back from the state backend again")
            elif not up:
                log.warning("budgets: the state backend is unreachable (%s): charges kept, admission on this "
                            "process's view%s", type(error).__name__ if error else "unknown",
                            "" if self.shared.limits.limits_open else " refused (limits_when_down: closed)")
        self.up = up
        if self.active:
            self.budgets.refuse_down = not up and not self.shared.limits.limits_open

    async def close(self) -> None:
        """Stop the loop; send what is pending once (bounded). The gateway has already started the
        sync that replaces it, or told the budgets to count in process only."""
        self.active = False
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        await self.refresh()


def _int(value: object) -> int:
    return int(value) if isinstance(value, bytes | str | int) else 0  # None: never charged
