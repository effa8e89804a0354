"""Circuit breaking per account and per provider, like Envoy's outlier detection (the ``circuit:`` section).

Each account and each provider has a breaker: closed → open (ejected) → half_open (one probe) → closed,
or open again for longer.

- What counts: a 5xx, a timeout, a connect error, a reset, a malformed answer and a stream the upstream
  broke are failures (Envoy's "5xx and gateway errors"). A 429 is neither: it is the cooldown's business
  (``retry_policies``), so it neither opens a circuit nor resets the count; every other answer (2xx, a
  4xx the client caused) is a success.
- Opening: ``consecutive_failures`` in a row, or a ``failure_ratio`` of at least ``min_requests``
  attempts in a fixed ``window`` (counted from the first failure: a breaker exists only once something
  failed). An account is ejected only while at most ``max_ejected_percent`` of its pool would be (the
  first ejection always is, as in Envoy). A provider's circuit has no such bound, but opens only when
  the failures are not some accounts' alone: every account in service (not ejected) must have had its
  last attempt in the window fail; one of them answering again keeps the provider closed.
- Open for ``base_ejection`` × n (n: its ejections in a row, capped at ``max_ejection``); n decays by one
  per ``window`` the circuit stays closed. An ejected account is not picked (it reads as cooling); a
  request for a provider whose circuit is open ends at once with the ``circuit_open`` failure (a 503
  with Retry-After, or the next target of a fallback list).
- Then half-open: the first request to come claims the probe (an account: the first pick of it; a
  provider: the first request for it) and holds it for ``probe_timeout``; the others see it still open.
  The probe's outcome decides: a success (or a 429) closes it, a failure opens it again for longer. A
  probe that never reports (the client left) frees the slot when its hold runs out.

Every transition is one log line and a change of ``router_circuit_state``; openings and successful
probes are told to the store's listener (the shared state writes them for the other gateways, which
then leave the probe to the gateway that opened the circuit: ``router.state_circuits``).
Breakers live in the :class:`~router.accounts.StateStore`, so a reload keeps them; times are on its clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.failures import CIRCUIT_OPEN, UpstreamFailure
from router.retry import parse_duration

if TYPE_CHECKING:
    from router.accounts import Account, AccountState, Pool, StateStore

log = logging.getLogger("router.circuit")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}  # router_circuit_state's values
TRANSPORT_FAILURES = frozenset({"connect_error", "timeout", "reset", "malformed"})
NEUTRAL = 429  # the cooldown's business: neither a failure nor a success for a circuit


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    """One provider's breaker settings (the ``circuit:`` section, with the provider's override)."""

    consecutive_failures: int = 5
    failure_ratio: float = 0.5  # 0: only consecutive failures open it
    min_requests: int = 20
    window: float = 30.0
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejected_percent: int = 50
    probe_timeout: float = 60.0

    def ejection(self, n: int) -> float:
        return min(self.base_ejection * n, self.max_ejection)


def compile_circuit(section: Any, base: CircuitSettings | None = None) -> CircuitSettings | None:
    """Settings from a ``circuit:`` mapping over ``base`` (the defaults); None when off (absent or false)."""
    if section is None or section is False:
        return None
    d = base or CircuitSettings()
    section = section if isinstance(section, dict) else {}

    def seconds(name: str, default: float) -> float:
        return parse_duration(section.get(name), default) or default

    return CircuitSettings(
        consecutive_failures=int(section.get("consecutive_failures", d.consecutive_failures)),
        failure_ratio=float(section.get("failure_ratio", d.failure_ratio)),
        min_requests=int(section.get("min_requests", d.min_requests)),
        window=seconds("window", d.window), base_ejection=seconds("base_ejection", d.base_ejection),
        max_ejection=seconds("max_ejection", d.max_ejection),
        max_ejected_percent=int(section.get("max_ejected_percent", d.max_ejected_percent)),
        probe_timeout=seconds("probe_timeout", d.probe_timeout))


def provider_circuit(top: CircuitSettings | None, override: Any) -> CircuitSettings | None:
    """A provider's settings: ``circuit: false`` turns it off, a mapping refines the top-level section
    (and turns it on when there is none)."""
    if override is None:
        return top
    return compile_circuit(override, top)


@dataclass(slots=True)
class Breaker:
    """One account's or provider's circuit (mutable, in the store)."""

    state: str = CLOSED
    until: float = 0.0  # open: ejected until; half_open: the probe's slot held until
    ejections: int = 0  # in a row: the next ejection lasts base_ejection × (this + 1)
    closed_at: float = 0.0
    consecutive: int = 0
    window_start: float = 0.0
    requests: int = 0
    failures: int = 0
    reason: str = ""
    # a provider's: the accounts whose last attempt in this window failed (bounded by the pool's size)
    failed_accounts: set[str] = field(default_factory=set)

    def count(self, failed: bool, now: float, s: CircuitSettings, account: str | None = None) -> bool:
        """Count one attempt in a closed circuit (a provider's names the ``account`` that made it);
        whether it trips."""
        if now - self.window_start >= s.window:
            self.window_start, self.requests, self.failures = now, 0, 0
            self.failed_accounts.clear()
        self.requests += 1
        if not failed:
            self.consecutive = 0
            if account is not None and self.failed_accounts:
                self.failed_accounts.discard(account)  # it answers again: no longer one of the failing
            return False
        if account is not None:
            self.failed_accounts.add(account)
        self.failures += 1
        self.consecutive += 1
        if self.consecutive >= s.consecutive_failures:
            self.reason = f"{self.consecutive} consecutive failures"
            return True
        if s.failure_ratio > 0 and self.requests >= s.min_requests and self.failures >= s.failure_ratio * self.requests:
            self.reason = f"{self.failures} of {self.requests} attempts failed within {s.window:g}s"
            return True
        return False

    def open(self, now: float, s: CircuitSettings) -> None:
        """Eject for base × n; n decays by one per ``window`` spent closed since the last ejection."""
        kept = self.ejections
        if self.state == CLOSED and kept and s.window > 0:
            kept = max(0, kept - int((now - self.closed_at) / s.window))
        self.ejections = kept + 1
        self.state, self.until = OPEN, now + s.ejection(self.ejections)
        self.consecutive, self.requests, self.failures, self.window_start = 0, 0, 0, now
        self.failed_accounts.clear()

    def close(self, now: float) -> None:
        self.state, self.until, self.closed_at, self.consecutive = CLOSED, 0.0, now, 0

    def claim(self, now: float, s: CircuitSettings) -> bool:
        """The probe slot, when the ejection (or the last probe's hold) has run out."""
        if self.state == CLOSED or now < self.until:
            return False
        self.state, self.until = HALF_OPEN, now + s.probe_timeout
        return True

    def shown(self, now: float) -> str:
        """The state as operators see it: an opening that has run out is half-open already (the next
        request for it is the probe), though the breaker turns so only when that request claims it."""
        return HALF_OPEN if self.state == OPEN and now >= self.until else self.state

    def public(self, wall: float, now: float) -> dict[str, Any]:
        return {"state": self.shown(now), "until": round(wall + self.until - now, 3) if self.state != CLOSED else None,
                "ejections": self.ejections}


@dataclass(slots=True)
class Circuits:
    """Every breaker of one store: accounts by state key, providers by name; the ejection counts."""

    accounts: dict[str, Breaker] = field(default_factory=dict)
    providers: dict[str, Breaker] = field(default_factory=dict)
    ejected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (provider, account id or "")


def verdict(outcome: int | str) -> bool | None:
    """Whether a failed attempt's outcome counts as a failure for a circuit: a 5xx or a transport
    failure does, another status is an answer (False), a 429 neither (None)."""
    if isinstance(outcome, int):
        return None if outcome == NEUTRAL else outcome >= 500
    return True if outcome in TRANSPORT_FAILURES else None


def gate(store: StateStore, name: str, s: CircuitSettings) -> UpstreamFailure | None:
    """Before a request's first attempt: the ``circuit_open`` failure while the provider's circuit is
    open (or half-open with its probe out); None to go on (this request may be the probe)."""
    b = store.circuits.providers.get(name)
    if b is None or b.state == CLOSED:
        return None
    now = store.clock()
    if b.claim(now, s):
        _log_transition(name, "", b, "probing with one request")
        return None
    wait = b.until - now if b.state == OPEN else 1.0
    return UpstreamFailure(CIRCUIT_OPEN, f"provider '{name}' is failing: its circuit is open (retry in "
                           f"{max(1.0, wait):.0f}s)", retry_after=max(1.0, wait))


def claim_account(store: StateStore, pool: Pool, acc: Account, st: AccountState, now: float) -> None:
    """An account whose ejection ran out was picked: this attempt is its probe; others see it ejected."""
    b = store.circuits.accounts.get(acc.state_key)
    s = pool.circuit
    if b is None or s is None or b.state == CLOSED:
        st.ejected_until = 0.0
        return
    if b.claim(now, s):
        st.ejected_until = b.until
        _log_transition(acc.provider, acc.id, b, "probing with one request")


def observe(store: StateStore, pool: Pool, acc: Account, failed: bool | None, s: CircuitSettings) -> bool:
    """One attempt's outcome into the account's and the provider's breakers; whether the provider's
    circuit is open now (the request stops retrying)."""
    now = store.clock()
    circuits = store.circuits
    key = acc.state_key
    b = circuits.accounts.get(key)
    if b is None and failed:
        b = circuits.accounts[key] = Breaker(window_start=now)
    if b is not None and _settle(b, failed, now, s, lambda: _may_eject(store, pool, now, s), None):
        _transitioned(store, b, acc.provider, acc.id, key, now, s)
        store.state(key).ejected_until = b.until if b.state == OPEN else 0.0
    p = circuits.providers.get(pool.provider)
    if p is None and failed:
        p = circuits.providers[pool.provider] = Breaker(window_start=now)
    if p is not None and _settle(p, failed, now, s, lambda: _all_failed(store, pool, p, now), key):
        _transitioned(store, p, pool.provider, "", pool.provider, now, s)
    return p is not None and p.state == OPEN


def _settle(b: Breaker, failed: bool | None, now: float, s: CircuitSettings, may_open: Any,
            account: str | None) -> bool:
    """Apply one outcome (a provider's names the account that made the attempt); whether the breaker
    changed state."""
    if b.state == HALF_OPEN:
        if failed:
            b.reason = "the probe failed"
            b.open(now, s)
        else:
            b.close(now)
        return True
    if b.state == OPEN or failed is None:
        return False  # an attempt that started before the ejection, or a 429
    if b.count(failed, now, s, account) and may_open():
        b.open(now, s)
        return True
    return False


def _may_eject(store: StateStore, pool: Pool, now: float, s: CircuitSettings) -> bool:
    """Envoy's rule: the first ejection always, others only while at most ``max_ejected_percent``."""
    ejected = sum(1 for a in pool.accounts if store.state(a.state_key).ejected_until > now)
    return ejected == 0 or (ejected + 1) * 100 <= s.max_ejected_percent * len(pool.accounts)


def _all_failed(store: StateStore, pool: Pool, p: Breaker, now: float) -> bool:
    """A provider's circuit opens only when the failures are not some accounts' alone: every account
    still in service (not ejected, not disabled) failed on its last attempt within the window. One
    failing account of several is its own circuit's business; the provider serves through the others."""
    failed = p.failed_accounts
    for a in pool.accounts:
        st = store.state(a.state_key)
        if st.ejected_until <= now and not st.disabled and a.state_key not in failed:
            return False  # in service and answering
    return True


def _transitioned(store: StateStore, b: Breaker, provider: str, account: str, key: str, now: float,
                  s: CircuitSettings) -> None:
    """Log a transition and tell the listener: an opening (and when its probe's verdict is due), or a
    probe that succeeded (a closing)."""
    if b.state == OPEN:
        store.circuits.ejected[(provider, account)] += 1
        _log_transition(provider, account, b, f"for {b.until - now:g}s ({b.reason})")
        if store.listener is not None:
            store.listener.tripped(key, b.until, b.until + s.probe_timeout)
    else:
        _log_transition(provider, account, b, "the probe succeeded")
        if store.listener is not None:
            store.listener.tripped(key, 0.0, 0.0)


def adopt(store: StateStore, key: str, provider: str, account: str, until: float) -> None:
    """Another gateway opened this circuit until ``until`` (store clock): open here too, unless it is
    open longer already."""
    breakers = store.circuits.accounts if account else store.circuits.providers
    b = breakers.get(key)
    if b is None:
        b = breakers[key] = Breaker()
    if b.state == OPEN and b.until >= until:
        return
    was = b.state
    b.state, b.until, b.reason = OPEN, until, "opened by another gateway"
    b.ejections = max(b.ejections, 1)
    if account:
        store.state(key).ejected_until = until
    if was != OPEN:
        _log_transition(provider, account, b, f"by another gateway: held until its probe decides, at most "
                                              f"{until - store.clock():.3g}s (the ejection and probe_timeout)")


def adopt_close(store: StateStore, key: str, provider: str, account: str) -> None:
    """Another gateway's probe succeeded: close here too (a circuit this gateway holds open)."""
    b = (store.circuits.accounts if account else store.circuits.providers).get(key)
    if b is None or b.state == CLOSED:
        return
    b.close(store.clock())
    if account:
        store.state(key).ejected_until = 0.0
    _log_transition(provider, account, b, "another gateway's probe succeeded")


def reset(store: StateStore, key: str) -> None:
    """An operator's reset: the account's circuit closes and forgets its ejections."""
    if store.circuits.accounts.pop(key, None) is not None:
        store.state(key).ejected_until = 0.0


def _log_transition(provider: str, account: str, b: Breaker, why: str) -> None:
    what = f"account '{provider}/{account}'" if account else f"provider '{provider}'"
    level = logging.WARNING if b.state == OPEN else logging.INFO
    verb = {OPEN: "opened", HALF_OPEN: "half-open", CLOSED: "closed"}[b.state]
    log.log(level, "circuit of %s %s: %s", what, verb, why, extra={
        "provider": provider, "account": account, "circuit": b.state, "ejections": b.ejections})


def account_view(store: StateStore, key: str, wall: float, now: float) -> dict[str, Any]:
    """An account's circuit for ``/admin/accounts``: state, ejected until (wall clock), ejections in a row."""
    b = store.circuits.accounts.get(key)
    return (b or Breaker()).public(wall, now)


def provider_views(store: StateStore, names: Any, wall: float, now: float) -> dict[str, dict[str, Any]]:
    """Each provider's circuit (those named) for ``/admin/accounts``."""
    breakers = store.circuits.providers
    return {name: (breakers.get(name) or Breaker()).public(wall, now) for name in names}


def state_samples(store: StateStore, pools: Any) -> list[tuple[str, str, int]]:
    """``router_circuit_state`` samples (provider, account id or "" for the provider, 0/1/2) of the
    pools with circuit breaking: config names only, so the labels stay bounded."""
    circuits = store.circuits
    now = store.clock()
    out: list[tuple[str, str, int]] = []
    for pool in pools:
        if pool.circuit is None:
            continue
        p = circuits.providers.get(pool.provider)
        out.append((pool.provider, "", STATE_VALUES[p.shown(now)] if p else 0))
        for acc in pool.accounts:
            b = circuits.accounts.get(acc.state_key)
            out.append((pool.provider, acc.id, STATE_VALUES[b.shown(now)] if b else 0))
    return out
