"""Circuit openings shared through Redis (``state.backend: redis``; the circuits are ``router.circuit``).

- An opening (an account ejected, a provider's circuit opened) is written at once in the background:
  its deadline (epoch ms) under ``{<prefix>:cool}:circuit:<account key or provider>`` with the
  cooldowns' extend-only script (a late or slow writer never shortens one; the key expires with it).
  While Redis is down the latest deadline per circuit is kept and written when it is back.
- Read back in the pools' sync: one more MGET in the same pipelined round trip (the keys share the
  cooldowns' hash tag, so it is Redis-Cluster-safe). A deadline this gateway has not seen yet (another
  gateway's opening) opens the circuit here too, until then (``router.circuit.adopt``).
- One probe for all gateways: the gateway that opened a circuit probes it when its opening runs out;
  the others hold it open ``probe_timeout`` longer (the opening carries that deadline too) and wait
  for its verdict: a failed probe is a longer opening (read back like the first), a successful one a
  close mark (``{<prefix>:cool}#circuit-closed:<key>``, epoch ms) newer than the opening, which closes
  the circuit in every gateway at its next sync. When no verdict comes in time (the opener has no
  traffic for it, or is gone) each gateway probes on its own, one probe at a time each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.asyncio.client import Pipeline

from router.circuit import adopt, adopt_close
from router.state_pools import as_int, local
from router.state_redis import parse_cooldowns

if TYPE_CHECKING:
    from router.shared_state import SharedState

PREFIX = "circuit:"  # account keys ("provider/id") and provider names never hold a ':'
CLOSED_MARK_TTL_MS = 86_400_000  # a close mark is read by every gateway's next sync, long before a day


class SharedCircuits:
    """The circuits' side of one gateway's :class:`SharedState`; see the module docstring."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        # circuit key -> (its opening's deadline, its probe's verdict due by), epoch ms, until written
        self.pending: dict[str, tuple[int, int]] = {}
        self.closes: dict[str, int] = {}  # circuit key -> when its probe succeeded here (epoch ms), until written
        self.seen: dict[str, int] = {}  # circuit key -> the last opening's deadline written or adopted here
        self.closed_seen: dict[str, int] = {}  # circuit key -> the last close mark acted on
        self._writing = False

    def tripped(self, key: str, until: float, hold: float) -> None:
        """A circuit opened here (store clock), or closed after its probe (``until`` 0): written in the
        background (kept while the backend is down)."""
        state = self.state
        offset = state.wall() - state.store.clock()
        if not until:
            self.closes[key] = int(state.wall() * 1000)
        else:
            ms, due = int((offset + until) * 1000), int((offset + hold) * 1000)
            old = self.pending.get(key, (0, 0))
            self.pending[key] = (max(ms, old[0]), max(due, old[1]))
            self.seen[key] = max(ms, self.seen.get(key, 0))
        if state.up and not self._writing:
            self._writing = True
            if state._spawn(self._write_all()) is None:
                self._writing = False

    async def _write_all(self) -> None:
        try:
            while self.pending or self.closes:
                await self.flush()
        finally:
            self._writing = False

    def closed_key(self, key: str) -> str:
        return self.state.redis.tally_key("circuit-closed", key)

    async def flush(self) -> None:
        """Write every pending opening and close mark in one pipelined round trip; each stays pending
        until written."""
        sent, closes = dict(self.pending), dict(self.closes)
        if not sent and not closes:
            return
        redis, now = self.state.redis, int(self.state.wall() * 1000)
        pipe = self.state.client.pipeline(transaction=False)
        for key, (until, due) in sent.items():
            await redis.queue_cool(pipe, PREFIX + key, until, "", now)
            await redis.queue_cool(pipe, PREFIX + key, due, "probe", now)
        for key, at in closes.items():
            pipe.set(self.closed_key(key), at, px=CLOSED_MARK_TTL_MS)
        await pipe.execute()
        for kept, done in ((self.pending, sent), (self.closes, closes)):
            for key, value in done.items():
                if kept.get(key) == value:
                    del kept[key]

    def queue_read(self, pipe: Pipeline, pools: Sequence[Sequence[str]]) -> list[str]:
        """One MGET of every pool's accounts' and providers' openings and close marks on ``pipe``; the
        circuit keys read (none queued when there are none)."""
        names = [key for pool in pools for key in pool]
        names += sorted({key.partition("/")[0] for key in names})
        if names:
            redis = self.state.redis
            pipe.mget([*(redis.cooldown_key(PREFIX + key) for key in names), *map(self.closed_key, names)])
        return names

    def adopt(self, names: Sequence[str], values: Sequence[object]) -> None:
        """The openings read back: another gateway's opens the circuit here too, until its probe's verdict
        is due; a close mark newer than the opening seen closes it here."""
        store, n = self.state.store, len(names)
        now_wall = self.state.wall()
        now_mono = store.clock()
        for i, key in enumerate(names):
            scopes, closed = parse_cooldowns(values[i]), as_int(values[n + i])
            ms = scopes.get("", 0)
            provider, _, account = key.partition("/")
            if ms > self.seen.get(key, 0) and ms > now_wall * 1000:
                self.seen[key] = ms
                if closed < ms:
                    adopt(store, key, provider, account, local(max(ms, scopes.get("probe", 0)), now_mono, now_wall))
            if closed > self.closed_seen.get(key, 0) and closed >= self.seen.get(key, closed + 1):
                self.closed_seen[key] = closed
                adopt_close(store, key, provider, account)
