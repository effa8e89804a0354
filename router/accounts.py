"""Account pools and the state that outlives a snapshot (cooldowns, sticky bindings, counters).

Compiled accounts are immutable and belong to a snapshot; their mutable state lives in a
:class:`StateStore` keyed by ``provider/account id``, owned by the app, so a reload does not forget
that an account is cooling or which account a sticky session is bound to.
"""

from __future__ import annotations

import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from router.circuit import Circuits, CircuitSettings, claim_account
from router.circuit import reset as reset_circuit
from router.credential_aws import signer_of
from router.scheduling import STRATEGIES, Strategy, weighted_round_robin

if TYPE_CHECKING:
    from router.credentials import Signer

WEIGHTS = range(1, 101)  # an account's ``weight``: 1 (the default) to 100, as the schema says
ERROR_WINDOW = 10.0  # seconds: an attempt outcome's weight in the error rate is e^(-age / this)
ERROR_FLOOR = 0.01  # an error rate below this reads as 0: an account left alone drifts back to healthy


@dataclass(frozen=True, slots=True)
class Account:
    provider: str
    id: str
    email: str
    api_key: str = field(repr=False)
    weight: int = 1  # its share of the pool's requests (round_robin, least_busy, p2c)
    signer: Signer | None = field(default=None, repr=False, compare=False)  # signs each request (AWS SigV4)
    # derived once (a request reads them on every attempt); not part of equality
    state_key: str = field(init=False, repr=False, compare=False)
    _public: dict[str, str] = field(init=False, repr=False, compare=False)
    # what request templates see as ``account`` (the key included); shared, never shown
    template_view: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_key", f"{self.provider}/{self.id}")
        object.__setattr__(self, "_public", {"id": self.id, "email": self.email, "provider": self.provider})
        object.__setattr__(self, "template_view", {"email": self.email, "id": self.id, "api_key": self.api_key})

    def public(self) -> dict[str, str]:
        """What templates of response headers and admin output may see: never the key. Shared, built
        once: callers copy it before changing it (templates cannot: their environment is immutable)."""
        return self._public


@dataclass(slots=True)
class AccountState:
    cooling_until: float = 0.0
    model_cooling: dict[str, float] = field(default_factory=dict)
    failures: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=20))
    requests: int = 0
    last_used: float = 0.0
    in_flight: int = 0  # attempts running now in this process (a stream until its end)
    current_weight: int = 0  # smooth weighted round robin's running score
    # the recent error rate: attempt outcomes, each weighted e^(-age / ERROR_WINDOW) as of ``outcome_at``
    errors: float = 0.0
    outcomes: float = 0.0
    outcome_at: float = 0.0
    ejected_until: float = 0.0  # its circuit is open (or its probe is out) until then (router.circuit)

    def cooling_for(self, model: str, now: float) -> float:
        """Seconds until this account may serve ``model`` again (0 when available). Read for every
        account a strategy weighs: comparisons, not the builtin ``max`` (which costs several times more).
        An ejected account reads as cooling."""
        until = self.cooling_until
        if self.ejected_until > until:
            until = self.ejected_until
        if self.model_cooling:
            scoped = self.model_cooling.get(model, 0.0)
            if scoped > until:
                until = scoped
        return until - now if until > now else 0.0

    def outcome(self, failed: bool, now: float) -> None:
        """Count one attempt's outcome in the error rate (older ones fade: bounded memory, no list).
        Once per attempt: plain arithmetic (a builtin ``max`` here would cost more than the rest)."""
        elapsed = now - self.outcome_at
        if elapsed > 0.0:
            decay = math.exp(-elapsed / ERROR_WINDOW)
            self.errors *= decay
            self.outcomes *= decay
            self.outcome_at = now
        self.outcomes += 1.0
        if failed:
            self.errors += 1.0

    def error_rate(self, now: float) -> float:
        """The share of failed attempts over about the last 30 s, with one success assumed beside
        them: a few failures count for less than many, and the rate fades while nobody tries it."""
        if not self.errors:
            return 0.0
        elapsed = now - self.outcome_at
        decay = math.exp(-elapsed / ERROR_WINDOW) if elapsed > 0.0 else 1.0
        rate = self.errors * decay / (self.outcomes * decay + 1.0)
        return rate if rate >= ERROR_FLOOR else 0.0


class StateListener(Protocol):
    """Told of every change to a :class:`StateStore` (``router.shared_state`` shares them). Each call
    returns at once: whatever it sends happens later, off the request path."""

    def cooled(self, key: str, scope: str, until: float) -> None: ...  # scope "": the whole account

    def failed(self, key: str) -> None: ...

    def used(self, key: str) -> None: ...

    def bound(self, session_key: str, account_key: str) -> None: ...

    def cleared(self, key: str) -> None: ...

    # a circuit (an account's key or a provider's name) opened until ``until``, its probe's verdict due by
    # ``hold``; or closed after its probe succeeded (both 0)
    def tripped(self, key: str, until: float, hold: float) -> None: ...

    async def recall_binding(self, session_key: str) -> None: ...  # bring in another gateway's binding


class StateStore:
    """In-process state shared by every snapshot (one per app / worker). The request path reads only
    this; a ``listener`` (the shared state, when one is configured) hears of each change and brings
    in what other gateways changed."""

    STICKY_MAX = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.clock = clock
        self.random = rng if rng is not None else random.Random()  # p2c's draws; a test seeds its own
        self.accounts: dict[str, AccountState] = {}
        self.sticky: OrderedDict[str, str] = OrderedDict()
        self.cursors: dict[str, int] = {}
        self.listener: StateListener | None = None
        self.circuits = Circuits()  # every account's and provider's breaker (router.circuit)

    def state(self, key: str) -> AccountState:
        st = self.accounts.get(key)
        if st is None:
            st = self.accounts[key] = AccountState()
        return st

    def bind(self, session: str, key: str, *, told: bool = True) -> None:
        """Bind a sticky session to an account (``told``: the listener hears of it)."""
        self.sticky[session] = key
        self.sticky.move_to_end(session)
        while len(self.sticky) > self.STICKY_MAX:
            self.sticky.popitem(last=False)
        if told and self.listener is not None:
            self.listener.bound(session, key)

    def advance(self, provider: str, past: int) -> None:
        """Round robin resumes after the account just used (so skipping a cooling one stays fair)."""
        self.cursors[provider] = past + 1

    def cool(self, account: Account, seconds: float, model: str | None, reason: str) -> None:
        st = self.state(account.state_key)
        now = self.clock()
        until = now + max(0.0, seconds)
        if model:
            st.model_cooling[model] = max(st.model_cooling.get(model, 0.0), until)
        else:
            st.cooling_until = max(st.cooling_until, until)
        st.failures.append((time.time(), reason))
        if self.listener is not None:
            self.listener.cooled(account.state_key, model or "", until)
            self.listener.failed(account.state_key)

    def record_failure(self, account: Account, reason: str) -> None:
        self.state(account.state_key).failures.append((time.time(), reason))
        if self.listener is not None:
            self.listener.failed(account.state_key)

    def reset(self, key: str) -> None:
        """Forget cooldowns, failures and the error rate; keep the counts (attempts in flight end on
        this same state)."""
        st = self.state(key)
        st.cooling_until, st.model_cooling = 0.0, {}
        st.failures.clear()
        st.errors = st.outcomes = 0.0
        reset_circuit(self, key)
        if self.listener is not None:
            self.listener.cleared(key)

    def adopt_cooldowns(self, key: str, whole: float, models: dict[str, float]) -> None:
        """Replace ``key``'s cooldowns (store clock) by what the shared state holds: another gateway's
        extend or an operator's reset elsewhere. Failures and counts stay."""
        st = self.state(key)
        st.cooling_until = whole
        st.model_cooling = models


@dataclass(frozen=True, slots=True)
class Pick:
    account: Account | None
    wait: float = 0.0  # when no account is free: seconds until the first one is


class Pool:
    """The accounts of one provider and how to choose among them: ``scheduling`` names the strategy
    (:mod:`router.scheduling`), fixed when the snapshot is compiled."""

    def __init__(self, provider: str, accounts: tuple[Account, ...], scheduling: str,
                 circuit: CircuitSettings | None = None):
        self.provider = provider
        self.circuit = circuit  # its breakers' settings (None: no circuit breaking)
        self.accounts = accounts
        self.scheduling = scheduling
        choose = STRATEGIES[scheduling]
        if len({a.weight for a in accounts}) > 1 and choose is STRATEGIES["round_robin"]:
            choose = weighted_round_robin  # equal weights keep the plain rotation (and its speed)
        self.choose: Strategy = choose

    def session_key(self, session: str) -> str:
        """Where a sticky session's binding is kept (sessions are per provider)."""
        return f"{self.provider}:{session}"

    def pick(self, store: StateStore, model: str, session: str | None, exclude: set[str]) -> Pick:
        """A free account (not cooling for ``model``, not in ``exclude``): a sticky session's bound
        one, else the strategy's choice; none free: how long until the first one is."""
        now = store.clock()
        if self.scheduling == "sticky" and session:
            bound = store.sticky.get(self.session_key(session))
            for acc in self.accounts:
                if acc.state_key == bound and bound not in exclude \
                        and store.state(bound).cooling_for(model, now) == 0.0:
                    return self._use(store, acc, now, session)
        if not self.accounts:
            return Pick(None)
        chosen = self.choose(self, store, model, exclude, now)
        if chosen is None:
            return Pick(None, self._soonest(store, model, exclude, now))
        return self._use(store, chosen, now, session)

    def _soonest(self, store: StateStore, model: str, exclude: set[str], now: float) -> float:
        """Seconds until the first account not in ``exclude`` is free again (0: none left to wait for)."""
        waits = [store.state(a.state_key).cooling_for(model, now) for a in self.accounts if a.state_key not in exclude]
        return min(waits, default=0.0)

    def _use(self, store: StateStore, acc: Account, now: float, session: str | None) -> Pick:
        st = store.state(acc.state_key)
        st.requests += 1
        st.last_used = now
        if st.ejected_until:  # its ejection ran out: this attempt is the probe
            claim_account(store, self, acc, st, now)
        if store.listener is not None:
            store.listener.used(acc.state_key)
        if self.scheduling == "sticky" and session:
            store.bind(self.session_key(session), acc.state_key)
        return Pick(acc)


def compile_accounts(provider: str, section: dict[str, Any]) -> tuple[Account, ...]:
    """The usable accounts of a provider, from ``accounts`` and the comma-separated ``key_list``.

    An account without an ``api_key`` field is keyless (a local OpenAI-compatible server: its
    templates send no credential); one whose ``api_key`` is present but empty (an unset
    ``${VAR:-}``) is left out, so the provider uses its ``fallback``. A provider with neither
    ``accounts`` nor ``key_list`` gets one implicit keyless account labelled with its own name.
    Tolerant of data the schema rejected (it is only called on such data to explain other errors).
    """
    listed = section.get("accounts")
    if "accounts" not in section and "key_list" not in section:
        return (Account(provider, provider, provider, ""),)
    out: list[Account] = []
    for a in listed if isinstance(listed, list) else []:
        if not isinstance(a, dict):
            continue
        key = a.get("api_key", None)
        if key is not None and (not isinstance(key, str) or not key):
            continue
        email = a.get("email") or f"{provider}-{len(out) + 1}"
        weight = a.get("weight", 1)
        try:
            signer = signer_of(a.get("credential"))
        except ValueError:  # the schema reports it
            continue
        out.append(Account(provider, str(a.get("id") or email), str(email), key or "",
                           weight if isinstance(weight, int) and weight in WEIGHTS else 1, signer))
    key_list = section.get("key_list")
    for item in (key_list if isinstance(key_list, str) else "").split(","):
        item = item.strip()
        if not item:
            continue
        # "label=key" only when the label looks like an email: a key may itself contain "=" (base64)
        label, sep, rest = item.partition("=")
        if sep and "@" in label and rest:
            email, key = label, rest
        else:
            email, key = f"{provider}-key-{len(out) + 1}", item
        out.append(Account(provider, email.strip(), email.strip(), key.strip()))
    return tuple(out)
