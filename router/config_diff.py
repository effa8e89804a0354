"""``router diff OLD NEW``: what a config change means for clients, as text or Markdown.

Both dirs are compiled with an empty environment and placeholder secrets (``router check
--placeholder-secrets``): no secret is read, every account and key written in the config counts as
set, so the answer is the same on every machine. Key material never shows: keys by name, with their
team, models, expiry, limits and budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from router.explain import describe_target, target_text
from router.mapping import ModelMapper
from router.snapshot import Provider, Snapshot

SECTIONS = ("models", "routes", "auth", "providers", "prices")


@dataclass(frozen=True, slots=True)
class Change:
    section: str  # one of SECTIONS
    what: str  # e.g. "exact gpt-4o", "key ci", "POST /v1/chat/completions"
    old: str | None  # None: added
    new: str | None  # None: removed

    @property
    def sign(self) -> str:
        return "+" if self.old is None else "-" if self.new is None else "~"


def diff(old: Snapshot, new: Snapshot) -> list[Change]:
    """Every change that matters to clients, section by section."""
    return [*_models(old.mapper, new.mapper), *_routes(old, new), *_auth(old, new), *_providers(old, new),
            *_compare("prices", _prices(old), _prices(new))]


def _compare(section: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    """Added, removed and changed entries of two ``name -> description`` tables (in the new order)."""
    out = [Change(section, name, old.get(name), new[name]) for name in new if old.get(name) != new[name]]
    return out + [Change(section, name, old[name], None) for name in old if name not in new]


def _models(old: ModelMapper, new: ModelMapper) -> list[Change]:
    return _compare("models", _mapping_table(old), _mapping_table(new))


def _mapping_table(mapper: ModelMapper) -> dict[str, str]:
    """Each rule (exact name, wildcard pattern in precedence order, default) and its target."""
    table = {f"exact {name}": _resolved(mapper, name, f"exact:{name}") for name in mapper.exact}
    for w in mapper.wildcards:
        table[f"wildcard {w.pattern}"] = _resolved(mapper, w.pattern, f"wildcard:{w.pattern}", w.target.describe())
    if mapper.default:
        table["default"] = _resolved(mapper, "\x00(no such model)", "default", mapper.default.describe())
    return table


def _resolved(mapper: ModelMapper, model: str, rule: str, otherwise: str = "") -> str:
    """The rule's target as :func:`router.explain.describe_target` shows it (a pattern resolves as
    the model named like it, its stars standing for themselves)."""
    target = mapper.resolve(model)
    return target_text(describe_target(target)) if target is not None and target.rule == rule else otherwise


def _routes(old: Snapshot, new: Snapshot) -> list[Change]:
    def table(snap: Snapshot) -> dict[str, str]:
        return {f"{'|'.join(sorted(r.methods))} {r.path}": f"{r.handler} (auth {r.auth})" for r in snap.routes.routes}

    return _compare("routes", table(old), table(new))


def _auth(old: Snapshot, new: Snapshot) -> list[Change]:
    def table(snap: Snapshot) -> dict[str, str]:
        shown = snap.auth.public()
        out = {"mode": shown["mode"]}
        out.update({f"key {k['name']}": _fields(k, ("team", "models", "expires", "limits", "budget"))
                    for k in shown["api_keys"]})
        out.update({f"admin key {name}": "admin" for name in shown["admin_keys"]})
        out.update({f"team {name}": _fields(b, ("period", "tokens", "usd"))
                    for name, b in shown.get("team_budgets", {}).items()})
        return out

    return _compare("auth", table(old), table(new))


def _fields(shown: Mapping[str, Any], names: Iterable[str]) -> str:
    parts = [f"{n} {_value(shown[n])}" for n in names if shown.get(n) is not None]
    return ", ".join(parts) or "no restrictions"


def _value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {x}" for k, x in v.items()) + "}"
    return str(v)


def _providers(old: Snapshot, new: Snapshot) -> list[Change]:
    """Added and removed providers whole; a changed one field by field (``gemini scheduling``)."""
    before = {n: _provider(p) for n, p in old.providers.items()}
    after = {n: _provider(p) for n, p in new.providers.items()}
    out = _compare("providers", {n: _joined(f) for n, f in before.items() if n not in after},
                   {n: _joined(f) for n, f in after.items() if n not in before})
    for name in (n for n in after if n in before):
        out += _compare("providers", {f"{name} {k}": v for k, v in before[name].items()},
                        {f"{name} {k}": v for k, v in after[name].items()})
    return out


def _provider(p: Provider) -> dict[str, str]:
    return {"dialect": p.dialect, "base_url": p.public()["base_url"], "accounts": str(len(p.pool.accounts)),
            "scheduling": p.pool.scheduling}


def _joined(fields: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in fields.items())


def _prices(snap: Snapshot) -> dict[str, str]:
    def one(p: Any) -> str:
        cached = f", cached input {p.cached_input}" if p.cached_input is not None else ""
        return f"input {p.input}, output {p.output}{cached} USD/M tokens"

    return {name: one(price) for name, price in snap.prices.source.items()}


# --- output ---------------------------------------------------------------------------------------

def _line(c: Change) -> str:
    if c.old is None:
        return f"  + {c.what}: {c.new}"
    if c.new is None:
        return f"  - {c.what} (was: {c.old})"
    return f"  ~ {c.what}: {c.old} -> {c.new}"


def text(changes: list[Change], old: str, new: str) -> str:
    lines = [f"router diff {old} {new}"]
    for section in SECTIONS:
        mine = [c for c in changes if c.section == section]
        if mine:
            lines += [f"{section}:", *map(_line, mine)]
    lines.append(_summary(changes))
    return "\n".join(lines)


def markdown(changes: list[Change], old: str, new: str) -> str:
    """For a pull-request comment: one table per section that changed."""
    lines = [f"### router diff `{old}` → `{new}`", "", _summary(changes)]
    for section in SECTIONS:
        mine = [c for c in changes if c.section == section]
        if mine:
            lines += ["", f"#### {section}", "", "| | what | before | after |", "|---|---|---|---|"]
            lines += [f"| {c.sign} | `{_cell(c.what)}` | {_cell(c.old)} | {_cell(c.new)} |" for c in mine]
    return "\n".join(lines)


def _cell(value: str | None) -> str:
    return "—" if value is None else value.replace("|", "\\|")


def _summary(changes: list[Change]) -> str:
    if not changes:
        return "no changes that clients would see"
    counts = {s: sum(1 for c in changes if c.sign == s) for s in "+-~"}
    return f"{len(changes)} change(s): {counts['+']} added, {counts['-']} removed, {counts['~']} changed"
