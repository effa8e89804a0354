"""Usage in Redis (``state.backend: redis``): every gateway's rows summed, day by day.

Layout: one hash per UTC day, ``{<prefix>:usage}:<YYYY-MM-DD>`` (one hash tag: the days of a range are
read in one pipelined round trip on a cluster too), with a field per row and counter,
``<key>\\x1f<team>\\x1f<client model>\\x1f<counter>`` (``\\x1f`` never occurs in the names:
``router.usage`` replaces it), each an integer ``HINCRBY`` adds to. A day's hash expires
``usage.retention_days`` after the day ended (``EXPIREAT``, set with each write).

Every ``state.sync_interval`` the rows changed since the last send go out in one pipelined round trip
(a backlog after an outage in batches of ``BATCH`` rows). Nothing is sent while the shared state says
Redis is down: the ledger keeps the increments (they merge: they are sums) and the first sync after it
is back sends them. A send that fails gives its rows back to the ledger. At shutdown what is left goes
out once, bounded in time. No request ever waits for any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import date, timedelta
from typing import TYPE_CHECKING

from router.shared_state import FAULTS, SharedState
from router.usage import COUNTERS, DAY, SEP, N, RowKey

if TYPE_CHECKING:
    from router.usage import UsageLedger

log = logging.getLogger("router.usage")

BATCH = 2_000  # rows per round trip (7 HINCRBY each at most)
READ_BOUND = 5.0  # seconds /admin/usage waits for Redis before answering from this process

Entries = dict[tuple[str, RowKey], list[int]]


class UsageSync:
    """Sends a ledger's rows to the shared state's Redis and reads every gateway's back."""

    def __init__(self, ledger: UsageLedger, shared: SharedState) -> None:
        self.ledger = ledger
        self.shared = shared
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self._stopped = False

    def day_key(self, day: str) -> str:
        return f"{{{self.shared.settings.prefix}:usage}}:{day}"

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """No more syncing (the shared state was replaced): a send in flight finishes (it gives its rows
        back if its connection is closed under it), a wait ends now."""
        self._stopped = True
        if self._task is not None and not self._sending:
            self._task.cancel()

    async def close(self) -> None:
        """Shutting down: stop, then send what is left once, bounded by the state's timeouts."""
        self.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.shared.up:
            settings = self.shared.settings
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.flush(), settings.connect_timeout + 4 * settings.timeout + 1.0)

    async def _run(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.shared.settings.sync_interval)
            if self.shared.up:  # down: kept; the shared state's own sync finds out when it is back
                await self.flush()

    # --- writing --------------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Send the unsent rows, a batch per round trip, until a batch is not full (a backlog after an
        outage goes out at once; rows changed while a send was under way wait for the next sync, so
        steady traffic costs one round trip a sync); False when a send failed (kept for later)."""
        while True:
            taken = self.ledger.take_unsent(BATCH)
            if not taken:
                return True
            if not await self._send(taken):
                return False
            if len(taken) < BATCH:
                return True

    async def _send(self, taken: list[tuple[str, RowKey, list[int]]]) -> bool:
        self._sending = True
        keep = self.ledger.settings.retention_days
        pipe = self.shared.client.pipeline(transaction=False)
        days: set[str] = set()
        for day, rk, delta in taken:
            field = SEP.join(rk) + SEP
            for name, amount in zip(COUNTERS, delta, strict=True):
                if amount:
                    pipe.hincrby(self.day_key(day), field + name, amount)
            days.add(day)
        for day in days:
            pipe.expireat(self.day_key(day), _day_start(day) + (keep + 1) * DAY)
        try:
            await pipe.execute()
        except FAULTS as e:
            self.ledger.give_back(taken)
            log.debug("usage not sent (%s): kept for the next sync", type(e).__name__)
            return False
        except BaseException:
            self.ledger.give_back(taken)
            raise
        finally:
            self._sending = False
        return True

    # --- reading --------------------------------------------------------------------------------

    async def read(self, first: str, last: str) -> Entries | None:
        """Every gateway's rows for the days ``first``..``last`` (one round trip), plus what this
        process has not sent yet; None when Redis did not answer."""
        days = list(_days(first, last))
        pipe = self.shared.client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self.day_key(day))
        try:
            replies = await asyncio.wait_for(pipe.execute(), READ_BOUND)
        except FAULTS:
            return None
        out: Entries = {}
        for day, fields in zip(days, replies, strict=True):
            _parse(day, fields, out)
        for day, rk, delta in self.ledger.unsent():
            if first <= day <= last and any(delta):
                counters = out.setdefault((day, rk), [0] * N)
                for i in range(N):
                    counters[i] += delta[i]
        return out


INDEX = {name: i for i, name in enumerate(COUNTERS)}


def _parse(day: str, fields: dict[bytes | str, bytes | str], out: Entries) -> None:
    """One day's hash into ``out``; fields this version does not know are skipped."""
    for raw, value in fields.items():
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        parts = name.split(SEP)
        index = INDEX.get(parts[-1]) if len(parts) == 4 else None
        if index is None:
            continue
        counters = out.setdefault((day, (parts[0], parts[1], parts[2])), [0] * N)
        counters[index] += int(value)


def _day_start(day: str) -> int:
    return (date.fromisoformat(day) - date(1970, 1, 1)).days * DAY


def _days(first: str, last: str) -> Iterable[str]:
    d, end = date.fromisoformat(first), date.fromisoformat(last)
    while d <= end:
        yield d.isoformat()
        d += timedelta(days=1)
