"""Pools read back from the shared state into the local store (``router.shared_state``'s sync).

One MGET per pool reads, for each account, its cooldowns (one value by scope), its reset mark, and
its request and failure counts: the keys share the hash tag ``{<prefix>:cool}``, so the MGET is
Redis-Cluster-safe. Deadlines travel as epoch milliseconds and live locally on the store's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from router.accounts import StateStore
from router.state_redis import RedisState, parse_cooldowns


def pool_keys(redis: RedisState, pool: Sequence[str]) -> list[str]:
    """The keys of one pool's MGET, in the order :meth:`Adopter.adopt` reads the values."""
    return [*(redis.cooldown_key(k) for k in pool), *(redis.reset_key(k) for k in pool),
            *(redis.tally_key("req", k) for k in pool), *(redis.tally_key("fail", k) for k in pool)]


@dataclass(slots=True)
class Adopter:
    """Brings pool reads into a store, extend-only: a cooldown the store holds stays (a read sent
    before its write landed, or a Redis that restarted empty, cannot end it early) unless a reset
    mark newer than the last one seen says an operator cleared the account."""

    store: StateStore
    marks: dict[str, int] = field(default_factory=dict)  # account -> the last reset mark seen (epoch ms)
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)  # account -> (requests, failures)

    def adopt(self, pool: Sequence[str], values: Sequence[object], pending: dict[str, dict[str, int]],
              now_wall: float) -> None:
        """One pool's MGET values; ``pending``: cooldowns set here not yet written, by account and scope."""
        now_mono, n = self.store.clock(), len(pool)
        for i, key in enumerate(pool):
            scopes = parse_cooldowns(values[i])
            mark = as_int(values[n + i])
            kept = {} if mark > self.marks.get(key, 0) else self.held(key, now_mono, now_wall)
            self.marks[key] = max(mark, self.marks.get(key, 0))
            for scope, ms in (*kept.items(), *pending.get(key, {}).items()):
                scopes[scope] = max(ms, scopes.get(scope, 0))
            whole = scopes.pop("", 0)
            self.store.adopt_cooldowns(key, local(whole, now_mono, now_wall) if whole else 0.0,
                                       {m: local(ms, now_mono, now_wall) for m, ms in scopes.items() if ms})
            self.totals[key] = (as_int(values[2 * n + i]), as_int(values[3 * n + i]))

    def held(self, key: str, now_mono: float, now_wall: float) -> dict[str, int]:
        """The cooldowns the store holds for ``key`` now, by scope, in epoch ms."""
        st = self.store.accounts.get(key)
        if st is None:
            return {}
        held = {m: until for m, until in st.model_cooling.items() if until > now_mono}
        if st.cooling_until > now_mono:
            held[""] = st.cooling_until
        return {scope: int((now_wall + until - now_mono) * 1000) for scope, until in held.items()}


def local(ms: int, now_mono: float, now_wall: float) -> float:
    """An epoch-ms deadline on the store's clock."""
    return now_mono + (ms / 1000 - now_wall)


def as_int(value: object) -> int:
    try:
        return int(value) if isinstance(value, bytes | str | int) else 0
    except ValueError:
        return 0
