"""The client limits' side of the shared state (``state.backend: redis``): every limit of a request
decided for all gateways in one round trip at admission, and the concurrency leases that outlive it.

- Admission: one Lua script (``RedisState.reserve_all``) reserves the request's rpm and tpm cells and
  takes a lease in each of its concurrency cells, all or none.
- A lease is a member ``<gateway id>:<sequence>`` of its cell's sorted set, scored with its expiry
  (``lease_ttl`` from Redis' clock); the script drops the expired before counting, so the slots of a
  gateway that crashed free themselves within ``lease_ttl``. A gateway renews the leases of its long
  requests (those last written a third of ``lease_ttl`` ago) in one pipelined call per ``sync_interval``,
  never one per request.
- A release (the response ended) is written in the background, never awaited by the request: the first
  starts a writer task, and those that come while it writes go in its next pipelined call. While Redis
  is down they are kept (at most ``MAX_RELEASES``, the oldest dropped: those expire anyway) and sent
  when it is back; so is the lease of an admission whose round trip failed (the script may have run).
- tpm corrections (``adjust_limits``) go in the background too, summed per cell while a write is under
  way (one writer at a time: a busy gateway sends one pipelined call for many requests); lost while
  Redis is down.

A reload to the same Redis (``url`` and ``prefix``) hands the leases over: the requests holding them
release and renew them through the new connection. Any other change leaves them to expire there.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.shared_state import SharedState

MAX_RELEASES = 10_000  # releases kept while Redis is down
MAX_ADJUSTS = 10_000  # cells with a tpm correction waiting for the writer (config-bounded; a guard)

# what ``reserve_limits`` answers: (refused cell, 1-based over the rate cells then the slots, or 0;
# its Retry-After; each rate cell's (remaining, reset seconds) when admitted; the lease's release)
Reply = tuple[int, float, list[tuple[int, float]], Callable[[], None] | None]


@dataclass(slots=True)
class Leases:
    """One gateway's leases: those its requests hold (member -> their lease sets' keys, when last
    written, monotonic) and those released but not yet written."""

    ttl: float
    gateway: str = field(default_factory=lambda: secrets.token_hex(6))  # unique per process and connection
    live: dict[str, tuple[tuple[str, ...], float]] = field(default_factory=dict)
    released: OrderedDict[str, tuple[str, ...]] = field(default_factory=OrderedDict)
    kick: Callable[[], None] | None = None  # the owner's "write the releases now"
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new(self) -> str:
        return f"{self.gateway}:{next(self._seq)}"

    def release(self, member: str, keys: tuple[str, ...]) -> None:
        """A lease given back (its response ended, or its admission failed): written in the background."""
        self.live.pop(member, None)
        self.keep({member: keys})
        if self.kick is not None:
            self.kick()

    def keep(self, released: dict[str, tuple[str, ...]]) -> None:
        self.released.update(released)
        while len(self.released) > MAX_RELEASES:
            self.released.popitem(last=False)

    def take_released(self) -> dict[str, tuple[str, ...]]:
        taken = dict(self.released)
        self.released.clear()
        return taken

    def due(self, now: float) -> list[str]:
        """The live leases last written a third of ``ttl`` ago or more: to renew."""
        return [member for member, (_, written) in self.live.items() if now - written >= self.ttl / 3]


def by_key(leases: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """``{member: its lease sets}`` as ``{lease set: members}`` (one command per lease set)."""
    grouped: dict[str, list[str]] = {}
    for member, keys in leases.items():
        for key in keys:
            grouped.setdefault(key, []).append(member)
    return grouped


class SharedLimiter:
    """``router.limits.SharedLimits`` over one gateway's :class:`SharedState`; see the module docstring."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self.limits_open = state.settings.limits_when_down == "open"  # when down: per process, else a 503
        self.leases = Leases(state.settings.lease_ttl)
        self._releasing = False  # a task is writing releases (one at a time)
        # tpm corrections not yet written: (tag, cell id) -> [seconds per unit, burst, tokens]
        self._adjusts: dict[tuple[str, str], list[Any]] = {}
        self._adjusting = False  # a task is writing them (one at a time)

    @property
    def up(self) -> bool:
        return self.state.up

    def start(self, previous: SharedLimiter | None) -> None:
        """Take over the leases of the one a reload replaced when they live in the same Redis keys."""
        settings = self.state.settings
        old = previous.state.settings if previous is not None else None
        if previous is not None and old is not None and (old.url, old.prefix) == (settings.url, settings.prefix):
            self.leases = previous.leases
            self.leases.ttl = settings.lease_ttl
        self.leases.kick = self._kick

    async def reserve_limits(self, tag: str, cells: Sequence[tuple[str, float, int, int]],
                             slots: Sequence[tuple[str, int]] = ()) -> Reply | None:
        """A request's rate cells reserved and a lease taken in each concurrency cell ``(id, limit)``,
        all or none, in one round trip; None: a fault (the backend may be down)."""
        state = self.state
        if not slots:
            reply = await state._guard(state.redis.reserve_all(tag, cells))
            return None if reply is None else (reply[0], reply[1], reply[2], None)
        leases = self.leases
        member = leases.new()
        keys = tuple(state.redis.limit_key(tag, name) for name, _ in slots)
        try:
            reply = await state._guard(state.redis.reserve_all(tag, cells, slots=slots, lease=member,
                                                               ttl_s=leases.ttl))
        except BaseException:  # the client went away during the round trip: the script may have run
            leases.release(member, keys)
            raise
        if reply is None or reply[0]:
            if reply is None:  # the script may have run
                leases.release(member, keys)
            return None if reply is None else (reply[0], reply[1], reply[2], None)
        leases.live[member] = (keys, time.monotonic())
        return 0, 0.0, reply[2], partial(leases.release, member, keys)

    def adjust_limits(self, tag: str, cells: Sequence[tuple[str, float, int, int]]) -> None:
        """Correct tpm cells by their cost (real use minus the estimate), in the background, summed
        per cell with those of other requests until the writer takes them; lost when down."""
        if not self.state.up:
            return
        adjusts = self._adjusts
        for name, interval, burst, delta in cells:
            kept = adjusts.get((tag, name))
            if kept is not None:
                kept[2] += delta
            elif len(adjusts) < MAX_ADJUSTS:
                adjusts[(tag, name)] = [interval, burst, delta]
        if not self._adjusting:
            self._adjusting = True
            if self.state._spawn(self._adjust_all()) is None:
                self._adjusting = False

    async def _adjust_all(self) -> None:
        """Write the corrections, one pipelined call per round, until none is left."""
        try:
            while self._adjusts:
                taken, self._adjusts = self._adjusts, {}
                by_tag: dict[str, list[tuple[str, float, int, int]]] = {}
                for (tag, name), (interval, burst, delta) in taken.items():
                    if delta:
                        by_tag.setdefault(tag, []).append((name, interval, burst, delta))
                await self.state.redis.adjust_many(by_tag)
        finally:
            self._adjusting = False

    def _kick(self) -> None:
        """Write the releases now, in the background, unless a writer runs (it takes them next) or
        Redis is down (the next sync that finds it up sends them)."""
        if self.state.up and not self._releasing:
            self._releasing = True
            if self.state._spawn(self._release_all()) is None:
                self._releasing = False

    async def _release_all(self) -> None:
        try:
            while self.leases.released:
                await self.flush()
        finally:
            self._releasing = False

    async def flush(self) -> None:
        """Write the releases kept so far in one pipelined call (kept again when it fails)."""
        batch = self.leases.take_released()
        if not batch:
            return
        try:
            await self.state.redis.release_leases(by_key(batch))
        except BaseException:
            self.leases.keep(batch)
            raise

    async def sync(self) -> None:
        """Once a ``sync_interval`` with the backend up: kept releases sent, then the long requests'
        leases renewed, each in one pipelined call."""
        await self.flush()
        now = time.monotonic()
        due = self.leases.due(now)
        if not due:
            return
        live = self.leases.live
        await self.state.redis.renew_leases(by_key({m: live[m][0] for m in due}), self.leases.ttl)
        for member in due:
            if member in live:  # not released meanwhile
                live[member] = (live[member][0], now)
