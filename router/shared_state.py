"""The state every worker and replica shares through Redis (``state: {backend: redis}``).

The request path never waits for Redis to decide on an account: it reads the in-process
:class:`~router.accounts.StateStore` as it always did, and this class is that store's listener.

- A cooldown is written at once in the background (one extend-only script per account: a late or
  slow writer never shortens one), and every ``sync_interval`` (1 s) one pipelined round trip sends
  the batched request and failure counts and reads every pool back (one MGET of its accounts'
  cooldowns, one of its counters). What another gateway cooled reaches this one within about
  ``sync_interval`` plus a round trip.
- Sticky bindings are written when they change (and refreshed before ``sticky_ttl`` runs out); a
  session this process has no usable binding for is looked up once (one GET) before its account is
  chosen.
- Stored Responses and tool-call signatures (``put_blobs``/``get_blobs``): written at once in the
  background, read on a local miss.

Faults. Every command is bounded by ``timeout`` and nothing is retried inline but a command on a
pooled connection that Redis closed (a restart), once, on a new connection. The first failure
marks the backend down (one warning); while it is down no request waits for it: reads answer
"unknown", writes stay pending in memory (bounded: one entry per account and scope), and the
background loop tries again every ``sync_interval``. The first success marks it up (one info line),
sends what was pending and reads the pools back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from router.accounts import StateStore
from router.lru import BoundedLRU
from router.state_redis import RedisState, parse_cooldowns
from router.state_settings import StateSettings

log = logging.getLogger("router.state")

MAX_CONNECTIONS = 256  # to Redis, per process: a request-path read uses one for ~0.1 ms
COUNTER_TTL = 86_400.0  # request and failure counts are forgotten after a day without one
MAX_PENDING_TASKS = 1_000  # background writes in flight; past it a write waits for the next sync
BINDINGS_WRITTEN = 100_000  # sticky bindings whose last write time is remembered (to refresh them)

# An account's pools, as (account state keys) per pool, from the snapshot serving now.
Pools = Callable[[], Iterable[Sequence[str]]]
FAULTS = (RedisError, OSError, asyncio.TimeoutError)


class SharedState:
    """One per gateway process with ``state.backend: redis``; see the module docstring."""

    def __init__(self, settings: StateSettings, store: StateStore, pools: Pools,
                 wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.pools = pools
        self.wall = wall
        self.client = Redis.from_url(
            settings.url, socket_timeout=settings.timeout, socket_connect_timeout=settings.connect_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),  # a pooled connection Redis
            max_connections=MAX_CONNECTIONS, health_check_interval=0)  # dropped (a restart): one reconnect
        self.redis = RedisState(self.client, settings.prefix)
        self.up = False
        self._decided = False  # whether up/down was ever known (the first state is logged too)
        # (account, scope) -> deadline (epoch ms): set here and not yet written (or being written)
        self._cool: dict[tuple[str, str], int] = {}
        self._resets: dict[str, int] = {}  # account -> the last reset mark seen (epoch ms)
        self._counts: Counter[str] = Counter()  # "req:<account>" / "fail:<account>" not yet sent
        self._written: BoundedLRU[float] = BoundedLRU(lambda k, v: 0, BINDINGS_WRITTEN, None, 1 << 62)
        self.totals: dict[str, tuple[int, int]] = {}  # account -> (requests, failures), every gateway
        self.synced_at: float | None = None  # wall time of the last pool read
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._tried = asyncio.Event()  # set once the first sync has been tried (up or down is known)
        self._flushing = False  # a task is writing the pending cooldowns (one at a time)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.store.listener = self
        self._loop = asyncio.get_running_loop().create_task(self._run())

    async def ready(self) -> None:
        """Until the first sync was tried, bounded: a gateway starts serving knowing whether the
        backend is up, and with the pools' shared cooldowns already in."""
        bound = self.settings.connect_timeout + 2 * self.settings.timeout + 0.5
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._tried.wait(), bound)

    async def close(self) -> None:
        if self.store.listener is self:
            self.store.listener = None
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    def public(self) -> dict[str, Any]:
        return {**self.settings.public(), "up": self.up, "synced_at": self.synced_at}

    # --- health ---------------------------------------------------------------------------------

    def _mark(self, up: bool, error: BaseException | None = None) -> None:
        """Record the backend's health; one log line per transition."""
        if up == self.up and self._decided:
            return
        self.up, self._decided = up, True
        where = self.settings.public()["address"]
        if up:
            log.info("state backend %s reachable: sharing cooldowns, sessions and stored responses", where)
        else:
            log.warning("state backend %s unreachable (%s): serving from this process's state until it "
                        "is back", where, type(error).__name__ if error else "unknown")

    async def _guard(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Run one Redis call; a fault marks the backend down and answers None."""
        try:
            result = await call
        except FAULTS as e:
            self._mark(False, e)
            return None
        self._mark(True)
        return result

    def _spawn(self, call: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Send in the background; a fault marks the backend down, never raises. None (not sent) past
        MAX_PENDING_TASKS."""
        if len(self._tasks) >= MAX_PENDING_TASKS:
            call.close()
            return None
        task = asyncio.get_running_loop().create_task(self._guard(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the loop: pending writes out, pools in ---------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(*FAULTS):
                await self.sync()
            self._tried.set()
            await asyncio.sleep(self.settings.sync_interval)

    async def sync(self) -> None:
        """Send what is pending, then read every pool back (one round trip for the reads)."""
        try:
            await self._flush_cooldowns()
            counts, self._counts = self._counts, Counter()
            pools = [list(pool) for pool in self.pools()]
            replies = await self._read_pools(counts, pools)
        except FAULTS as e:
            self._mark(False, e)
            return
        self._mark(True)
        self._adopt(pools, replies)

    async def _read_pools(self, counts: Counter[str], pools: list[list[str]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for name, amount in counts.items():
            pipe.incrby(self.redis.counter_key(name), amount)
            pipe.pexpire(self.redis.counter_key(name), int(COUNTER_TTL * 1000))
        for pool in pools:
            pipe.mget([*(self.redis.cooldown_key(k) for k in pool), *(self.redis.reset_key(k) for k in pool)])
            pipe.mget([self.redis.counter_key(f"{kind}:{k}") for k in pool for kind in ("req", "fail")])
        try:
            replies = await pipe.execute()
        except BaseException:
            self._counts.update(counts)  # not sent: next time
            raise
        return list(replies[2 * len(counts):])

    async def _flush_cooldowns(self) -> None:
        """Write every pending cooldown (pipelined); each stays pending until a write of it succeeded."""
        pending = dict(self._cool)
        if not pending:
            return
        now = int(self.wall() * 1000)
        if len(pending) == 1:  # the usual case: one 429 (a pipeline with a script checks it exists first)
            ((key, scope), until), = pending.items()
            await self.redis.cool(key, until, scope, now)
        else:
            pipe = self.client.pipeline(transaction=False)
            for (key, scope), until in pending.items():
                await self.redis.queue_cool(pipe, key, until, scope, now)
            await pipe.execute()
        for item, until in pending.items():
            if self._cool.get(item) == until:
                del self._cool[item]

    def _adopt(self, pools: list[list[str]], replies: list[Any]) -> None:
        """Every pool's shared cooldowns and counts into the local store.

        Extend-only here too: a cooldown this gateway holds stays (a read sent before its write
        landed, or a Redis that restarted empty, cannot end it early), unless a reset mark newer than
        the last one seen says an operator cleared the account (then only what is pending here and
        what Redis holds since count)."""
        now_mono, now_wall = self.store.clock(), self.wall()
        pending: dict[str, dict[str, int]] = {}
        for (key, scope), ms in self._cool.items():
            pending.setdefault(key, {})[scope] = ms
        for pool, values, counters in zip(pools, replies[0::2], replies[1::2], strict=True):
            for i, key in enumerate(pool):
                scopes = parse_cooldowns(values[i])
                mark = _int(values[len(pool) + i])
                kept = {} if mark > self._resets.get(key, 0) else self._held(key, now_mono, now_wall)
                self._resets[key] = max(mark, self._resets.get(key, 0))
                for scope, ms in (*kept.items(), *pending.get(key, {}).items()):
                    scopes[scope] = max(ms, scopes.get(scope, 0))
                whole = scopes.pop("", 0)
                self.store.adopt_cooldowns(key, _local(whole, now_mono, now_wall) if whole else 0.0,
                                           {m: _local(ms, now_mono, now_wall) for m, ms in scopes.items() if ms})
                self.totals[key] = (_int(counters[2 * i]), _int(counters[2 * i + 1]))
        self.synced_at = round(now_wall, 3)

    def _held(self, key: str, now_mono: float, now_wall: float) -> dict[str, int]:
        """The cooldowns this gateway holds for ``key`` now, by scope, in epoch ms."""
        st = self.store.accounts.get(key)
        if st is None:
            return {}
        held = {m: until for m, until in st.model_cooling.items() if until > now_mono}
        if st.cooling_until > now_mono:
            held[""] = st.cooling_until
        return {scope: int((now_wall + until - now_mono) * 1000) for scope, until in held.items()}

    # --- the StateStore listener (called on the request path: nothing waits) ----------------------

    def cooled(self, key: str, scope: str, until: float) -> None:
        ms = int((self.wall() + (until - self.store.clock())) * 1000)
        self._cool[(key, scope)] = max(ms, self._cool.get((key, scope), 0))
        if self.up and not self._flushing:
            self._flushing = True
            if self._spawn(self._flush_all()) is None:
                self._flushing = False

    async def _flush_all(self) -> None:
        """Write pending cooldowns until none is left (a burst of 429s is one task, a few round trips)."""
        try:
            while self._cool:
                await self._flush_cooldowns()
        finally:
            self._flushing = False

    def failed(self, key: str) -> None:
        self._counts[f"fail:{key}"] += 1

    def used(self, key: str) -> None:
        self._counts[f"req:{key}"] += 1

    def bound(self, session_key: str, account_key: str) -> None:
        now = self.store.clock()
        last = self._written.get(session_key + "\x00" + account_key)
        if last is not None and now - last < self.settings.sticky_ttl / 2:
            return  # written recently enough: it outlives the next refresh
        self._written.put(session_key + "\x00" + account_key, now)
        if self.up:
            self._spawn(self.redis.bind(session_key, account_key, self.settings.sticky_ttl))

    def cleared(self, key: str) -> None:
        self._cool = {item: ms for item, ms in self._cool.items() if item[0] != key}
        now = int(self.wall() * 1000)
        self._resets[key] = now  # this gateway's own reset: its mark is nothing new here
        self._spawn(self.redis.clear([key], now))  # down: this gateway's reset only (said in the README)

    # --- request-path reads (bounded by ``timeout``; nothing when down) ----------------------------

    async def recall_binding(self, session_key: str) -> None:
        """Bring in the account another gateway bound ``session_key`` to, if any."""
        if not self.up:
            return
        account = await self._guard(self.redis.binding(session_key))
        if account:
            self.store.bind(session_key, account, told=False)
            self._written.put(session_key + "\x00" + account, self.store.clock())

    async def get_blobs(self, kind: str, keys: list[str]) -> list[bytes | None] | None:
        """Stored blobs of ``kind`` (None when the backend is down or failed)."""
        if not self.up:
            return None
        result: list[bytes | None] | None = await self._guard(self.redis.get_blobs(kind, keys))
        return result

    def put_blobs(self, kind: str, items: Iterable[tuple[str, bytes]], ttl: float, max_items: int,
                  max_bytes: int) -> asyncio.Task[Any] | None:
        """Store blobs (bounded together like the local store; see ``put_blob``); the write, for a
        response to await before it ends (it never raises), or None when the backend is down."""
        if not self.up:
            return None
        return self._spawn(self._put_blobs(kind, list(items), ttl, max_items, max_bytes))

    async def _put_blobs(self, kind: str, items: list[tuple[str, bytes]], ttl: float, max_items: int,
                         max_bytes: int) -> None:
        if len(items) == 1:
            key, blob = items[0]
            await self.redis.put_blob(kind, key, blob, ttl, max_items, max_bytes)
            return
        pipe = self.client.pipeline(transaction=False)
        for key, blob in items:
            await self.redis.queue_put_blob(pipe, kind, key, blob, ttl, max_items, max_bytes)
        await pipe.execute()


def _local(ms: int, now_mono: float, now_wall: float) -> float:
    """An epoch-ms deadline on the store's clock."""
    return now_mono + (ms / 1000 - now_wall)


def _int(value: object) -> int:
    try:
        return int(value) if isinstance(value, bytes | str | int) else 0
    except ValueError:
        return 0

