"""The state every worker and replica shares through Redis (``state: {backend: redis}``).

The request path never waits for Redis to decide on an account: it reads the in-process
:class:`~router.accounts.StateStore` as it always did, and this class is that store's listener.

- A cooldown is written at once in the background (one extend-only script per account: a late or
  slow writer never shortens one), and every ``sync_interval`` (1 s) one pipelined round trip sends
  the batched request and failure counts and reads every pool back (one MGET per pool:
  ``router.state_pools``). What another gateway cooled reaches this one within about
  ``sync_interval`` plus a round trip.
- Sticky bindings are written when they change (and refreshed before ``sticky_ttl`` runs out); a
  session this process has no usable binding for is looked up once (one GET) before its account is
  chosen.
- Stored Responses and tool-call signatures (``put_blobs``/``get_blobs``): written before the
  response ends (the engine awaits the write), read on a local miss.
- Client limits (rpm, tpm, concurrency leases): ``self.limits``, see ``router.state_limits``; circuit
  openings and closings (written at once, read in the pools' round trip): ``self.circuits``, ``router.state_circuits``.

Faults. Every command is bounded by ``timeout``; nothing is retried inline but a command on a pooled
connection that Redis closed (a restart), once, on a new connection. ``DOWN_AFTER`` failed commands
in a row, or a failed sync, mark the backend down (one warning); while it is down no request waits
for it: reads answer "unknown" at once and every write is kept (``router.state_pending``, bounded).
Only the background loop, trying every ``sync_interval``, marks it up again (one info line), then
sends what was kept and reads the pools back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError, ResponseError

from router.accounts import StateStore
from router.lru import BoundedLRU
from router.state_circuits import SharedCircuits
from router.state_limits import SharedLimiter
from router.state_pending import Pending
from router.state_pools import Adopter, pool_keys
from router.state_redis import RedisState
from router.state_settings import StateSettings

log = logging.getLogger("router.state")

MAX_CONNECTIONS = 256  # to Redis, per process: a request-path read uses one for ~0.1 ms
COUNTER_TTL_MS = 86_400_000  # request and failure counts are forgotten after a day without one
MAX_PENDING_TASKS = 1_000  # background writes in flight; past it a write is kept for the next sync
BINDINGS_WRITTEN = 100_000  # sticky bindings whose last write time is remembered (to refresh them)
DOWN_AFTER = 3  # failed commands in a row (outside the sync) that mark the backend down
FLUSH_BATCH = 64  # kept bindings per round trip when the backend is back
ERROR_LOG_EVERY = 60.0  # seconds between two log lines of a command Redis refused (a script error)

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
        self.redis = RedisState(self.client, settings.prefix, lane_timeout=settings.timeout)  # admission: a lane
        self.up = False
        self._decided = False  # whether up/down was ever known (the first state is logged too)
        self._failures = 0  # failed commands in a row
        self._refused_logged = 0.0  # when a refused command was last logged (monotonic)
        self.pending = Pending()
        self.limits = SharedLimiter(self)  # the client limits' side: router.limits.SharedLimits
        self.circuits = SharedCircuits(self)
        self.adopter = Adopter(store)
        self._written: BoundedLRU[float] = BoundedLRU(lambda k, v: 0, BINDINGS_WRITTEN, None, 1 << 62)
        self.synced_at: float | None = None  # wall time of the last pool read
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._tried = asyncio.Event()  # set once the first sync has been tried (up or down is known)
        self._flushing = False  # a task is writing the pending cooldowns (one at a time)
        self._closed = False

    @property
    def healthy(self) -> bool:
        """Up, and the last command did not fail (a miss may then be another gateway's entry)."""
        return self.up and self._failures == 0

    @property
    def totals(self) -> dict[str, tuple[int, int]]:
        """Account -> (requests, failures) through every gateway, as of the last sync."""
        return self.adopter.totals

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, previous: SharedState | None = None) -> None:
        """Listen to the store and start syncing; ``previous`` (replaced by a reload) hands over
        what it still had to write."""
        if previous is not None:
            self.pending.take_over(previous.pending)
        self.limits.start(previous.limits if previous is not None else None)
        self.store.listener = self
        self._loop = asyncio.get_running_loop().create_task(self._run())

    def _bound(self) -> float:
        return self.settings.connect_timeout + 2 * self.settings.timeout + 0.5

    async def ready(self) -> None:
        """Until the first sync was tried, bounded: a gateway starts serving knowing whether the
        backend is up, and with the pools' shared cooldowns already in."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._tried.wait(), self._bound())

    async def close(self) -> None:
        """Stop syncing; let the writes responses are waiting for finish (bounded), send what is
        pending once (bounded), close the connections. Never waits longer than a few bounds."""
        self._closed = True
        if self.store.listener is self:
            self.store.listener = None
        if self._loop is not None:
            self._loop.cancel()
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._bound())
            for task in late:
                task.cancel()
        if self.up:
            with contextlib.suppress(*FAULTS):
                await asyncio.wait_for(self._flush_pending(), self._bound())
        await self.redis.close()

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

    def _failed(self, error: BaseException) -> None:
        """A command failed: ``DOWN_AFTER`` in a row mark the backend down. A command Redis refused
        (a script error) says nothing of its health: logged, at most once a minute."""
        if isinstance(error, ResponseError):
            now = time.monotonic()
            if now - self._refused_logged >= ERROR_LOG_EVERY:
                self._refused_logged = now
                log.error("state backend refused a command: %s", str(error)[:200])
            return
        if isinstance(error, MaxConnectionsError):  # this process is busy, not Redis: only this one waits
            return
        self._failures += 1
        if self._failures >= DOWN_AFTER:
            self._mark(False, error)

    async def _guard(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Run one Redis call; a fault is counted (``_failed``) and answers None."""
        try:
            result = await call
        except FAULTS as e:
            self._failed(e)
            return None
        self._failures = 0
        return result

    def _spawn(self, call: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Send in the background (``_guard``: never raises); None (not sent) past MAX_PENDING_TASKS."""
        if len(self._tasks) >= MAX_PENDING_TASKS:
            call.close()
            return None
        task = asyncio.get_running_loop().create_task(self._guard(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the loop: pending writes out, pools in ---------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            await self.sync()
            self._tried.set()
            await asyncio.sleep(self.settings.sync_interval)

    async def sync(self) -> None:
        """Send what is pending, then read every pool back (one round trip); the backend's health
        is decided here."""
        try:
            await self._flush_account_writes()
            pools = [list(pool) for pool in self.pools()]
            values = await self._read_pools(pools)
        except FAULTS as e:
            self._mark(False, e)
            return
        self._failures = 0
        self._mark(True)
        self._adopt(pools, values)
        try:  # after the backend is marked up: a long outage may have kept many
            await self.limits.sync()
            await self._flush_kept_entries()
        except FAULTS as e:
            self._failed(e)

    def _adopt(self, pools: list[list[str]], values: list[list[object]]) -> None:
        """Each pool's read into the store; cooldowns set here and not yet written stay."""
        pending: dict[str, dict[str, int]] = {}
        for (key, scope), ms in self.pending.cooldowns.items():
            pending.setdefault(key, {})[scope] = ms
        now_wall = self.wall()
        for pool, pool_values in zip(pools, values, strict=True):
            self.adopter.adopt(pool, pool_values, pending, now_wall)
        self.synced_at = round(now_wall, 3)

    async def _flush_pending(self) -> None:
        """Everything kept while the backend could not take it."""
        await self._flush_account_writes()
        await self.limits.flush()
        await self._flush_kept_entries()

    async def _flush_account_writes(self) -> None:
        """Resets, then cooldowns (one set after a reset must survive it): few, and read back next."""
        pending = self.pending
        if pending.resets:
            resets = sorted(pending.resets)
            await self.redis.clear(resets, int(self.wall() * 1000))
            pending.resets.difference_update(resets)
        await self._flush_cooldowns()
        await self.circuits.flush()

    async def _flush_kept_entries(self) -> None:
        """Sticky bindings and stored blobs kept during an outage, a batch per round trip."""
        pending = self.pending
        while pending.bindings:
            bindings = list(pending.bindings.items())[:FLUSH_BATCH]
            pipe = self.client.pipeline(transaction=False)
            for session, account in bindings:
                pipe.set(self.redis.binding_key(session), account, px=int(self.settings.sticky_ttl * 1000))
            await pipe.execute()
            for session, account in bindings:
                if pending.bindings.get(session) == account:
                    del pending.bindings[session]
                self._written.put(session + "\x00" + account, self.store.clock())
        kept = pending.take_blobs()
        for start in range(0, len(kept), FLUSH_BATCH):
            batch = kept[start:start + FLUSH_BATCH]
            groups: dict[tuple[str, float, int, int], list[tuple[str, bytes]]] = {}
            for kind, key, entry in batch:  # each with its own bounds (a reload may have changed them)
                groups.setdefault((kind, entry.ttl, entry.max_items, entry.max_bytes), []).append((key, entry.blob))
            try:
                for (kind, ttl, items, max_bytes), blobs in groups.items():
                    await self.redis.put_blobs(kind, blobs, ttl, items, max_bytes)
            except BaseException:
                for kind, key, entry in kept[start:]:
                    pending.keep_blobs(kind, [(key, entry.blob)], entry.ttl, entry.max_items, entry.max_bytes)
                raise

    async def _read_pools(self, pools: list[list[str]]) -> list[list[object]]:
        """The batched counts out and one MGET per pool in, in one pipelined round trip."""
        counts, self.pending.counts = self.pending.counts, type(self.pending.counts)()
        pipe = self.client.pipeline(transaction=False)
        for name, amount in counts.items():
            kind, _, account = name.partition(":")
            pipe.incrby(self.redis.tally_key(kind, account), amount)
            pipe.pexpire(self.redis.tally_key(kind, account), COUNTER_TTL_MS)
        for pool in pools:
            pipe.mget(pool_keys(self.redis, pool))
        circuits = self.circuits.queue_read(pipe, pools)
        try:
            replies = await pipe.execute()
        except BaseException:
            self.pending.counts.update(counts)  # not sent: next time
            raise
        if circuits:
            self.circuits.adopt(circuits, replies.pop())
        return [list(r) for r in replies[2 * len(counts):]]

    async def _flush_cooldowns(self) -> None:
        """Write every pending cooldown; each stays pending until a write of it succeeded."""
        sent = dict(self.pending.cooldowns)
        if not sent:
            return
        now = int(self.wall() * 1000)
        if len(sent) == 1:  # the usual case: one 429 (a pipeline with a script checks it exists first)
            ((key, scope), until), = sent.items()
            await self.redis.cool(key, until, scope, now)
        else:
            pipe = self.client.pipeline(transaction=False)
            for (key, scope), until in sent.items():
                await self.redis.queue_cool(pipe, key, until, scope, now)
            await pipe.execute()
        self.pending.written(sent)

    async def _flush_all(self) -> None:
        """Write pending cooldowns until none is left (a burst of 429s is one task, a few round trips)."""
        try:
            while self.pending.cooldowns:
                await self._flush_cooldowns()
        finally:
            self._flushing = False

    # --- the StateStore listener (called on the request path: nothing waits) ----------------------

    def cooled(self, key: str, scope: str, until: float) -> None:
        self.pending.cool(key, scope, int((self.wall() + (until - self.store.clock())) * 1000))
        if self.up and not self._flushing:
            self._flushing = True
            if self._spawn(self._flush_all()) is None:
                self._flushing = False

    def tripped(self, key: str, until: float, hold: float) -> None:
        self.circuits.tripped(key, until, hold)

    def failed(self, key: str) -> None:
        self.pending.counts[f"fail:{key}"] += 1

    def used(self, key: str) -> None:
        self.pending.counts[f"req:{key}"] += 1

    def bound(self, session_key: str, account_key: str) -> None:
        last = self._written.get(session_key + "\x00" + account_key)
        if last is not None and self.store.clock() - last < self.settings.sticky_ttl / 2:
            return  # written recently enough: it outlives the next refresh
        if not self.up or self._spawn(self._bind(session_key, account_key)) is None:
            self.pending.bind(session_key, account_key)

    async def _bind(self, session_key: str, account_key: str) -> None:
        try:
            await self.redis.bind(session_key, account_key, self.settings.sticky_ttl)
        except BaseException:
            self.pending.bind(session_key, account_key)
            raise
        self._written.put(session_key + "\x00" + account_key, self.store.clock())

    def cleared(self, key: str) -> None:
        now = int(self.wall() * 1000)
        self.adopter.marks[key] = now  # this gateway's own reset: its mark is nothing new here
        self.pending.reset(key)
        if self.up:
            self._spawn(self._clear(key, now))

    async def _clear(self, key: str, now: int) -> None:
        await self.redis.clear([key], now)
        self.pending.resets.discard(key)

    # --- request-path reads and the stores' writes -------------------------------------------------

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
        """Store blobs (bounded together like the local store; see ``RedisState.put_blobs``); the
        write, for a response to await before it ends (it never raises), or None when the backend is
        down (then they are kept and sent when it is back)."""
        batch = list(items)
        task = self._spawn(self._put_blobs(kind, batch, ttl, max_items, max_bytes)) if self.up else None
        if task is None:
            self.pending.keep_blobs(kind, batch, ttl, max_items, max_bytes)
        return task

    async def _put_blobs(self, kind: str, items: list[tuple[str, bytes]], ttl: float, max_items: int,
                         max_bytes: int) -> None:
        try:
            await self.redis.put_blobs(kind, items, ttl, max_items, max_bytes)
        except FAULTS as e:
            if not isinstance(e, ResponseError):  # refused: sending it again would be refused again
                self.pending.keep_blobs(kind, items, ttl, max_items, max_bytes)
            raise
