"""How a pool chooses among its free accounts: a provider's ``scheduling``.

Each strategy gets the pool, the state store, the model and the accounts already tried, and returns
a free account (not in ``exclude``, not cooling for the model) or None when there is none; the pool
counts the pick and binds sticky sessions (:class:`router.accounts.Pool`). Strategies read and
update only the store's per-account state (in flight, error rate, round-robin scores), never a
module-level value, and draw random numbers only from ``store.random`` (a test seeds its own).

- ``round_robin`` (and ``sticky``'s first choice): the next free account after the last one used;
  when weights differ, nginx's smooth weighted round robin.
- ``least_busy``: the fewest attempts in flight per unit of weight, ties by weighted round robin.
- ``p2c``: two distinct free accounts drawn with probability proportional to weight, and the one
  with the better score, (1 + in flight / weight) x (1 + 9 x recent error rate) (:func:`score`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from router.accounts import Account, AccountState, Pool, StateStore
    from router.failures import UpstreamFailure

# (pool, store, model, accounts tried, now) -> a free account, or None
Strategy: TypeAlias = Callable[["Pool", "StateStore", str, set[str], float], "Account | None"]

ERROR_PENALTY = 9.0  # p2c: an account failing every attempt counts as ten times as busy as a healthy one
# failed attempts that say nothing of the account: the client's request was wrong (401, 403: the key is)
CLIENT_FAULTS = frozenset({400, 404, 405, 409, 413, 415, 422})


def round_robin(pool: Pool, store: StateStore, model: str, exclude: set[str], now: float) -> Account | None:
    """The first free account from the pool's cursor on; the cursor moves past it (so skipping a
    cooling account stays fair)."""
    accounts = pool.accounts
    n = len(accounts)
    start = store.cursors.get(pool.provider, 0) % n
    for i in range(n):
        index = (start + i) % n
        acc = accounts[index]
        if acc.state_key in exclude:
            continue
        if store.state(acc.state_key).cooling_for(model, now) == 0.0:
            store.advance(pool.provider, index)
            return acc
    return None


def weighted_round_robin(pool: Pool, store: StateStore, model: str, exclude: set[str], now: float
                         ) -> Account | None:
    """nginx's smooth weighted round robin: every free account's score grows by its weight, the
    highest score serves and drops by the free accounts' total weight. Weights {3, 1} serve
    a a b a, a a b a, ...: each account its share, spread out rather than in runs."""
    return _smooth(pool, store, model, exclude, now, None)


def least_busy(pool: Pool, store: StateStore, model: str, exclude: set[str], now: float) -> Account | None:
    """The free account with the fewest attempts in flight per unit of weight; among those that tie
    (every account idle, under light load) smooth weighted round robin, so each still gets its
    share by weight."""
    lowest: float | None = None
    best: Account | None = None
    ties = 0
    for acc in pool.accounts:
        if acc.state_key in exclude:
            continue
        st = store.state(acc.state_key)
        if st.cooling_for(model, now):
            continue
        load = st.in_flight / acc.weight  # equal fractions divide to the same float: ties are exact
        if lowest is None or load < lowest:
            lowest, best, ties = load, acc, 1
        elif load == lowest:
            ties += 1
    if ties < 2:  # one alone would leave the round-robin scores as they are: no second pass
        return best
    return _smooth(pool, store, model, exclude, now, lowest)


def _smooth(pool: Pool, store: StateStore, model: str, exclude: set[str], now: float, load: float | None
            ) -> Account | None:
    """Smooth weighted round robin over the free accounts (only those with ``load`` in flight per
    unit of weight, unless None)."""
    best: Account | None = None
    best_state: AccountState | None = None
    total = 0
    for acc in pool.accounts:
        if acc.state_key in exclude:
            continue
        st = store.state(acc.state_key)
        if st.cooling_for(model, now) or (load is not None and st.in_flight / acc.weight != load):
            continue
        st.current_weight += acc.weight
        total += acc.weight
        if best_state is None or st.current_weight > best_state.current_weight:
            best, best_state = acc, st
    if best_state is not None:
        best_state.current_weight -= total
    return best


def power_of_two(pool: Pool, store: StateStore, model: str, exclude: set[str], now: float) -> Account | None:
    """Power of two choices: two distinct free accounts drawn with probability proportional to their
    weight, and the one with the lower :func:`score` (the first drawn on a tie). Choosing from two
    rather than all keeps an account that just turned best from drawing every request at once."""
    free: list[tuple[Account, AccountState]] = []
    total = 0
    for acc in pool.accounts:
        if acc.state_key in exclude:
            continue
        st = store.state(acc.state_key)
        if not st.cooling_for(model, now):
            free.append((acc, st))
            total += acc.weight
    if len(free) < 2:
        return free[0][0] if free else None
    rand = store.random.random
    first = _draw(free, rand() * total, -1)
    second = _draw(free, rand() * (total - free[first][0].weight), first)
    (a, a_state), (b, b_state) = free[first], free[second]
    return a if score(a, a_state, now) <= score(b, b_state, now) else b


def _draw(free: list[tuple[Account, AccountState]], point: float, skip: int) -> int:
    """The index of the account whose stretch of the weights' line (``skip``'s left out) holds ``point``."""
    last = -1
    for i, (acc, _) in enumerate(free):
        if i == skip:
            continue
        last = i
        point -= acc.weight
        if point < 0:
            return i
    return last  # ``point`` at the very end (float rounding)


def score(acc: Account, st: AccountState, now: float) -> float:
    """p2c's health score, lower is better: (1 + in_flight / weight) × (1 + 9 × error_rate). Idle
    healthy accounts tie (the draw, by weight, decides); one failing every attempt counts as ten
    times as busy, at any load."""
    return (1.0 + st.in_flight / acc.weight) * (1.0 + ERROR_PENALTY * st.error_rate(now))


def account_failed(failure: UpstreamFailure) -> bool:
    """Whether a failed attempt counts against its account's error rate: any failure but one the
    client's request caused (a 400 or 404 would fail with every account alike)."""
    return failure.outcome not in CLIENT_FAULTS


STRATEGIES: dict[str, Strategy] = {
    "round_robin": round_robin, "sticky": round_robin, "least_busy": least_busy, "p2c": power_of_two}
