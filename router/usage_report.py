"""``GET /admin/usage``: the usage rows of a range of days, filtered and grouped, as JSON or CSV.

Query parameters (each optional; anything else is a 400 naming it):

- ``from``, ``to``: UTC days ``YYYY-MM-DD``, inclusive; default the last 7 days (today included);
  at most ``MAX_DAYS`` days.
- ``key``, ``team``, ``model``: only these (repeated or comma-separated); ``-`` is "none" (requests
  without a key, a key without a team).
- ``group_by``: any of ``day,key,team,model`` (default ``day,key,model``); empty: one row, the totals.
- ``format``: ``json`` (default) or ``csv`` (also chosen by ``Accept: text/csv``).

With ``state.backend: redis`` the rows are every gateway's (``"source": "redis"``); while Redis does
not answer, this process's own (``"source": "local"``, ``"complete": false``). A client's own view,
``GET /v1/usage`` (``router.key_usage``), is the same answer for another :class:`View`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import MultiMapping

from router.endpoints import json_response
from router.errors import BadRequest
from router.prices import NANO_PER_USD
from router.usage import COUNTERS, N, RowKey, day_of

if TYPE_CHECKING:
    from router.endpoints import Params, Services
    from router.exchange import Exchange
    from router.gateway import Gateway

DIMENSIONS = ("day", "key", "team", "model")
DEFAULT_DAYS = 7
MAX_DAYS = 400
FILTERS = ("key", "team", "model")  # in row-key order
NONE = "-"  # a filter's and the CSV's word for "no key" / "no team" / "no model"
SHOWN = (*COUNTERS[:-1], "cost_usd")  # cost as USD, not nano-dollars
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class View:
    """What a caller may ask for: the admin any row, a client its own key's (``router.key_usage``)."""

    dimensions: tuple[str, ...]  # what it may group by
    default_group: tuple[str, ...]
    filters: tuple[str, ...]  # what it may filter on

    @property
    def params(self) -> frozenset[str]:
        return frozenset({"from", "to", "group_by", "format", *self.filters})


ADMIN = View(DIMENSIONS, ("day", "key", "model"), FILTERS)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    first: str
    last: str
    group_by: tuple[str, ...]
    filters: Mapping[int, frozenset[str]]  # row-key index (0 key, 1 team, 2 model) -> the names wanted
    csv: bool


def parse_query(query: MultiMapping[str], accept: str, today: str, view: View = ADMIN) -> UsageQuery:
    """The request's query as a :class:`UsageQuery`; a BadRequest naming the parameter."""
    unknown = sorted(set(query) - view.params)
    if unknown:
        raise BadRequest(f"unknown parameter '{unknown[0]}'; known: {', '.join(sorted(view.params))}",
                         param=unknown[0])
    last = _day(query, "to") or today
    first = _day(query, "from") or (date.fromisoformat(last) - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    if first > last:
        raise BadRequest(f"'from' ({first}) is after 'to' ({last})", param="from")
    if (date.fromisoformat(last) - date.fromisoformat(first)).days >= MAX_DAYS:
        raise BadRequest(f"a range of at most {MAX_DAYS} days, please", param="from")
    filters = {i: frozenset("" if v == NONE else v for v in values)
               for i, name in enumerate(FILTERS) if name in view.filters and (values := _listed(query, name))}
    return UsageQuery(first, last, _group_by(query, view), filters, _wants_csv(query, accept))


def _listed(query: MultiMapping[str], name: str) -> list[str]:
    return [v.strip() for given in query.getall(name, []) for v in given.split(",") if v.strip()]


def _day(query: MultiMapping[str], name: str) -> str | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        if not _DAY.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise BadRequest(f"'{name}' must be a day, YYYY-MM-DD (UTC)", param=name) from None


def _group_by(query: MultiMapping[str], view: View) -> tuple[str, ...]:
    if "group_by" not in query:
        return view.default_group
    wanted = _listed(query, "group_by")
    bad = [g for g in wanted if g not in view.dimensions]
    if bad or len(set(wanted)) != len(wanted):
        raise BadRequest(f"'group_by' takes each of {', '.join(view.dimensions)} at most once", param="group_by")
    return tuple(wanted)


def _wants_csv(query: MultiMapping[str], accept: str) -> bool:
    fmt = query.get("format")
    if fmt is None:
        return "text/csv" in accept
    if fmt not in ("json", "csv"):
        raise BadRequest("'format' is json or csv", param="format")
    return fmt == "csv"


# --- grouping --------------------------------------------------------------------------------------


def group(entries: Iterable[tuple[str, RowKey, list[int]]], q: UsageQuery
          ) -> tuple[list[tuple[tuple[str, ...], list[int]]], list[int]]:
    """Rows summed by ``q.group_by`` (sorted by it) among those ``q.filters`` keep, and their totals."""
    out: dict[tuple[str, ...], list[int]] = {}
    totals = [0] * N
    picks = [DIMENSIONS.index(d) for d in q.group_by]
    for day, rk, counters in entries:
        if any(rk[i] not in wanted for i, wanted in q.filters.items()):
            continue
        names = (day, *rk)
        dims = tuple(names[p] for p in picks)
        summed = out.setdefault(dims, [0] * N)
        for i in range(N):
            summed[i] += counters[i]
            totals[i] += counters[i]
    return sorted(out.items()), totals


def _shown(counters: list[int]) -> dict[str, Any]:
    return {**dict(zip(COUNTERS[:-1], counters[:-1], strict=True)),
            "cost_usd": round(counters[-1] / NANO_PER_USD, 9)}


def as_json(rows: list[tuple[tuple[str, ...], list[int]]], totals: list[int], q: UsageQuery,
            extra: dict[str, Any]) -> dict[str, Any]:
    shown = [{**{d: (v if v or d == "day" else None) for d, v in zip(q.group_by, dims, strict=True)},
              **_shown(counters)} for dims, counters in rows]
    return {"from": q.first, "to": q.last, "group_by": list(q.group_by), "rows": shown, "totals": _shown(totals),
            **extra}


def as_csv(rows: list[tuple[tuple[str, ...], list[int]]], q: UsageQuery) -> str:
    """RFC 4180: a header line, CRLF line ends, fields quoted when they need it; cost exact to the nano-dollar."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*q.group_by, *SHOWN])
    for dims, counters in rows:
        nano = counters[-1]
        cost = f"{nano // NANO_PER_USD}.{nano % NANO_PER_USD:09d}"
        writer.writerow([*(v or NONE for v in dims), *counters[:-1], cost])
    return out.getvalue()


# --- the endpoint ----------------------------------------------------------------------------------


async def admin_usage(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    ledger = svc.gateway.usage
    q = parse_query(request.query, request.headers.get("Accept", ""), day_of(ledger.clock()))
    return await answer(svc.gateway, q, {})


async def answer(gateway: Gateway, q: UsageQuery, head: dict[str, Any]) -> web.Response:
    """The rows of ``q`` as JSON (``head`` first) or CSV: every gateway's through Redis when it answers,
    else this process's own."""
    ledger = gateway.usage
    entries = await ledger.sync.read(q.first, q.last) if ledger.sync is not None and ledger.sync.shared.up else None
    if entries is not None:
        source, complete = "redis", True
        found: Iterable[tuple[str, RowKey, list[int]]] = ((day, rk, c) for (day, rk), c in entries.items())
    else:  # this process's own: all there is with memory, unless --workers runs others beside it
        source, complete = "local", ledger.sync is None and gateway.worker is None
        found = ledger.local(q.first, q.last)
    rows, totals = group(found, q)
    if q.csv:
        return web.Response(text=as_csv(rows, q), content_type="text/csv", charset="utf-8",
                            headers={"X-Usage-Source": source, "X-Usage-Complete": str(complete).lower()})
    return json_response({**head, **as_json(rows, totals, q, {"source": source, "complete": complete,
                                                              **gateway.answered_by()})})
