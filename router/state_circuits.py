"""Circuit openings shared through Redis (``state.backend: redis``; the circuits are ``router.circuit``).

- An opening (an account ejected, a provider's circuit opened) is written at once in the background:
  its deadline (epoch ms) under ``{<prefix>:cool}:circuit:<account key or provider>`` with the
  cooldowns' extend-only script (a late or slow writer never shortens one; the key expires with it).
  While Redis is down the latest deadline per circuit is kept and written when it is back.
- Read back in the pools' sync: one more MGET in the same pipelined round trip (the keys share the
  cooldowns' hash tag, so it is Redis-Cluster-safe). A deadline this gateway has not seen yet (another
  gateway's opening) opens the circuit here too, until then (``router.circuit.adopt``).
- Half-open is per gateway: when an opening runs out each gateway sends its own one probe (at most one
  per gateway at a time); the first to fail re-opens the circuit for everyone at their next sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.asyncio.client import Pipeline

from router.circuit import adopt
from router.state_pools import local
from router.state_redis import parse_cooldowns

if TYPE_CHECKING:
    from router.shared_state import SharedState

PREFIX = "circuit:"  # account keys ("provider/id") and provider names never hold a ':'


class SharedCircuits:
    """The circuits' side of one gateway's :class:`SharedState`; see the module docstring."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self.pending: dict[str, int] = {}  # circuit key -> its opening's deadline (epoch ms), until written
        self.seen: dict[str, int] = {}  # circuit key -> the last deadline written or adopted here
        self._writing = False

    def tripped(self, key: str, until: float) -> None:
        """A circuit opened here (store clock): written in the background (kept while the backend is down)."""
        state = self.state
        ms = int((state.wall() + until - state.store.clock()) * 1000)
        self.pending[key] = max(ms, self.pending.get(key, 0))
        self.seen[key] = max(ms, self.seen.get(key, 0))
        if state.up and not self._writing:
            self._writing = True
            if state._spawn(self._write_all()) is None:
                self._writing = False

    async def _write_all(self) -> None:
        try:
            while self.pending:
                await self.flush()
        finally:
            self._writing = False

    async def flush(self) -> None:
        """Write every pending opening in one pipelined round trip; each stays pending until written."""
        sent = dict(self.pending)
        if not sent:
            return
        redis, now = self.state.redis, int(self.state.wall() * 1000)
        pipe = self.state.client.pipeline(transaction=False)
        for key, until in sent.items():
            await redis.queue_cool(pipe, PREFIX + key, until, "", now)
        await pipe.execute()
        for key, until in sent.items():
            if self.pending.get(key) == until:
                del self.pending[key]

    def queue_read(self, pipe: Pipeline, pools: Sequence[Sequence[str]]) -> list[str]:
        """One MGET of every pool's accounts' and providers' openings on ``pipe``; the circuit keys read
        (none queued when there are none)."""
        names = [key for pool in pools for key in pool]
        names += sorted({key.partition("/")[0] for key in names})
        if names:
            pipe.mget([self.state.redis.cooldown_key(PREFIX + key) for key in names])
        return names

    def adopt(self, names: Sequence[str], values: Sequence[object]) -> None:
        """The openings read back: the new ones (another gateway's) open the circuits here too."""
        store = self.state.store
        now_wall = self.state.wall()
        now_mono = store.clock()
        for key, value in zip(names, values, strict=True):
            ms = parse_cooldowns(value).get("", 0)
            if ms <= self.seen.get(key, 0) or ms <= now_wall * 1000:
                continue
            self.seen[key] = ms
            provider, _, account = key.partition("/")
            adopt(store, key, provider, account, local(ms, now_mono, now_wall))
