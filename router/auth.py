"""Client authentication: modes, named keys (by their sha256), the models a key may use, expiry.

A presented key is hashed once and looked up by its digest: the cost of a request is the same
whatever the number of keys, and the compiled snapshot holds no key, only digests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from router.budgets import Budget, BudgetCell, BudgetPlan, budget_plan, compile_budget
from router.errors import GatewayError
from router.limits import LimitPlan, Limits, compile_limits, limit_plan
from router.model_limits import ModelPlans, glob_regex, model_plans

MODES = ("off", "strict", "all_except_health", "auto")


def key_digest(key: str) -> bytes:
    """The sha256 a key is known by (``router hash-key`` prints it in hex): of its bytes as sent
    (a header that is not UTF-8 reaches us with its bytes kept as surrogates)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class ModelFilter:
    """The client model names a key may use: exact names and ``*`` patterns (``*``: any text)."""

    patterns: tuple[str, ...]
    exact: frozenset[str] = field(init=False, repr=False, compare=False)
    wildcard: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stars = [p for p in self.patterns if "*" in p]
        object.__setattr__(self, "exact", frozenset(p for p in self.patterns if "*" not in p))
        regex = "|".join(glob_regex(p) for p in stars)
        object.__setattr__(self, "wildcard", re.compile(regex, re.DOTALL) if stars else None)

    def allows(self, model: str) -> bool:
        return model in self.exact or (self.wildcard is not None and self.wildcard.fullmatch(model) is not None)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A named key: its sha256, and for a client key its team, models (None: all) and expiry."""

    name: str
    digest: bytes = field(repr=False)
    team: str | None = None
    models: ModelFilter | None = None
    expires: float | None = None  # unix time from which the key is refused (None: never)
    limits: Limits | None = None  # its own (``limits``); ``plan`` holds its team's as well
    plan: LimitPlan | None = None  # None: no limit applies (the request path skips the limiter)
    budget: BudgetPlan | None = None  # its own budget and its team's (None: none, nothing to check)
    # limits.models on the key or its team: the plan per client model (None: ``plan`` for every model)
    by_model: ModelPlans | None = field(default=None, repr=False, compare=False)

    def plan_for(self, model: str) -> LimitPlan | None:
        """The plan a request for the client model ``model`` is held to."""
        return self.plan if self.by_model is None else self.by_model.plan(model)

    def plans(self) -> tuple[LimitPlan, ...]:
        """Every plan its requests may be held to (one per entry of ``limits.models`` at most)."""
        extra = self.by_model.each() if self.by_model is not None else ()
        return (*([self.plan] if self.plan is not None else []), *extra)

    def allows(self, model: str) -> bool:
        return self.models is None or self.models.allows(model)

    def check_model(self, model: str) -> None:
        """A 403 naming the model when this key may not use it (the client's name, before mapping);
        callers skip the call for a key without ``models``."""
        if self.models is not None and not self.models.allows(model):
            raise GatewayError("permission", f"The API key '{self.name}' may not use the model '{model}'",
                               param="model", code="model_not_allowed")

    def expired_error(self) -> GatewayError:
        """The 401 of a key past its ``expires`` (which the caller checked: no call per valid request)."""
        return GatewayError("authentication", f"The API key '{self.name}' expired at {instant(self.expires or 0.0)}",
                            code="expired_api_key")

    def public(self) -> dict[str, Any]:
        """What /admin/config shows: never the key or its hash."""
        shown: dict[str, Any] = {"name": self.name, "team": self.team,
                                 "models": list(self.models.patterns) if self.models is not None else None,
                                 "expires": instant(self.expires) if self.expires is not None else None}
        if self.limits is not None:
            shown["limits"] = self.limits.public()
        own = self.budget.own if self.budget is not None else None
        return shown if own is None else {**shown, "budget": own.public()}


@dataclass(frozen=True, slots=True)
class Team:
    """A team client keys may name (``auth.teams``), with the limits and the budget its keys share."""

    name: str
    limits: Limits | None = None
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    mode: str  # effective mode: off | strict | all_except_health (auto already resolved)
    keys: tuple[ApiKey, ...]
    admin_keys: tuple[ApiKey, ...] = ()
    teams: Mapping[str, Team] = field(default_factory=dict)
    _by_digest: dict[bytes, ApiKey] = field(init=False, repr=False, compare=False)
    _admin_by_digest: dict[bytes, ApiKey] = field(init=False, repr=False, compare=False)
    budget_cells: tuple[BudgetCell, ...] = field(init=False, repr=False, compare=False)  # each budget once
    # the client keys that authenticated, as presented: one entry per key at most, for this snapshot
    _known: dict[str, ApiKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_known", {})
        object.__setattr__(self, "_by_digest", {k.digest: k for k in reversed(self.keys)})  # the first one wins
        object.__setattr__(self, "_admin_by_digest", {k.digest: k for k in reversed(self.admin_keys)})
        # every budget of the keys and their teams, once (what the shared state reads back)
        cells = {c.id: c for k in self.keys if k.budget is not None for c in k.budget.cells}
        object.__setattr__(self, "budget_cells", tuple(cells.values()))

    def required(self, public: bool, route_auth: str = "inherit") -> bool:
        """Whether a request must carry a valid key; ``public``: the endpoint is one the
        ``all_except_health`` mode leaves open (the health check)."""
        if route_auth == "none":
            return False
        if route_auth == "required":
            return True
        if self.mode == "off":
            return False
        if self.mode == "all_except_health":
            return not public
        return True

    def identify(self, presented: str | None, admin: bool = False) -> ApiKey | None:
        """The named key matching ``presented`` (an admin key with ``admin``): the key is hashed once
        and found by its digest, then the digests are compared in constant time.

        A client key that matched is remembered as presented, for this snapshot (a reload forgets
        them; at most one entry per configured key): its next requests skip the hash (~7k of the
        ~70k instructions a key with limits adds per request). A key that did not match is never
        kept, and a lookup compares a presented key's characters only with a key whose full 64-bit
        string hash it shares, so the time it takes tells nothing of the keys."""
        if not presented:
            return None
        if not admin:
            known = self._known.get(presented)
            if known is not None:
                return known
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()  # key_digest, inlined
        found = (self._admin_by_digest if admin else self._by_digest).get(digest)
        if found is None or not hmac.compare_digest(digest, found.digest):
            return None
        if not admin and len(self._known) < len(self.keys):
            self._known[presented] = found
        return found

    def cell_ids(self) -> frozenset[str]:
        """Where the counters of every limit this policy holds keys to are kept (the limiter drops the
        others when it goes live)."""
        return frozenset(cell.id for key in self.keys for plan in key.plans() for cell in plan.cells())

    def public(self) -> dict[str, Any]:
        """What /admin/config shows of it: names, teams, models, expiry, limits and budgets (the teams' in
        ``team_limits`` and ``team_budgets``), never a key or a hash."""
        shown = {"mode": self.mode, "api_keys": [k.public() for k in self.keys], "teams": sorted(self.teams),
                 "admin_keys": [k.name for k in self.admin_keys]}
        teams = sorted(self.teams.items())
        limits = {name: team.limits.public() for name, team in teams if team.limits}
        budgets = {name: team.budget.public() for name, team in teams if team.budget}
        return {**shown, **({"team_limits": limits} if limits else {}),
                **({"team_budgets": budgets} if budgets else {})}


def presented_key(headers: Mapping[str, str], key_headers: tuple[str, ...]) -> str | None:
    """The key a client sent: ``Authorization: Bearer``, then each of ``key_headers`` (the API
    families' own key headers, ``router.registry.KEY_HEADERS``) in order."""
    auth = headers.get("Authorization") or _header(headers, "authorization")  # aiohttp's: the first get
    if auth:
        value = auth[7:].strip() if auth.startswith("Bearer ") else _bearer(auth)  # the usual form first
        if value:
            return value
    for name in key_headers:
        given = _header(headers, name)
        if given:
            return given
    return None


def _bearer(auth: str) -> str:
    """The credentials of an ``Authorization`` header of the Bearer scheme (any case); "" otherwise."""
    scheme, _, value = auth.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive; plain dicts (tests, other callers) usually are lower-case.
    return headers.get(name) or headers.get(name.lower()) or headers.get(name.title())


# the instants a datetime can show: an expiry beyond them (the end of 9999-12-31, an offset before
# year 1) is kept as the nearest one, so it can always be shown
FIRST_INSTANT = datetime(1, 1, 1, tzinfo=UTC).timestamp()
LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def parse_expiry(text: str) -> float:
    """``expires``: a date is the end of that day UTC, a datetime must carry its zone (Z or ±hh:mm).
    Raises ValueError for anything else."""
    if len(text) == 10:
        seconds = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).timestamp() + 86_400
    else:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError(f"{text!r} has no zone: add Z (UTC) or an offset such as +02:00")
        seconds = moment.timestamp()
    return min(max(seconds, FIRST_INSTANT), LAST_INSTANT)


def instant(seconds: float) -> str:
    """A unix time as an RFC 3339 UTC datetime (``2027-07-01T00:00:00Z``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def compile_auth(section: dict[str, Any] | None, allow_lan_access: bool) -> AuthPolicy:
    section = section or {}
    mode = section.get("mode", "auto")
    if mode == "auto":
        mode = "all_except_health" if allow_lan_access else "off"
    teams = {name: Team(name, compile_limits((body or {}).get("limits")), compile_budget((body or {}).get("budget")))
             for name, body in (section.get("teams") or {}).items()}
    return AuthPolicy(mode, _keys(section.get("api_keys"), teams), _keys(section.get("admin_keys"), {}), teams)


def _keys(entries: list[dict[str, Any]] | None, teams: Mapping[str, Team]) -> tuple[ApiKey, ...]:
    """Named keys; an entry whose key resolved to "" (unset variable) is left out."""
    return tuple(_key(k, teams) for k in entries or [] if k.get("key") or k.get("key_sha256"))


def _key(entry: dict[str, Any], teams: Mapping[str, Team]) -> ApiKey:
    digest = bytes.fromhex(entry["key_sha256"]) if entry.get("key_sha256") else key_digest(entry["key"])
    models = entry.get("models")
    expires = entry.get("expires")
    name, team, limits = entry["name"], entry.get("team"), compile_limits(entry.get("limits"))
    known = teams.get(team) if isinstance(team, str) else None
    team_limits = known.limits if known is not None else None
    return ApiKey(name, digest, team, ModelFilter(tuple(models)) if models else None,
                  parse_expiry(str(expires)) if expires else None, limits,
                  limit_plan(name, limits, team, team_limits),
                  budget_plan(name, compile_budget(entry.get("budget")), team, known.budget if known else None),
                  model_plans(name, limits, team, team_limits))
