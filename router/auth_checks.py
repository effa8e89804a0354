"""The ``auth`` section's checks beyond its schema: key names used once, teams that exist, expiry
dates that exist, no key given twice (by its value or its hash: either way one identity), and no
``usd`` budget without a price to count it with.

Data of the wrong shape is the schema's to report: it is skipped here, so no problem is reported twice.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import Any

from router.auth import key_digest, parse_expiry
from router.config import LoadedConfig
from router.errors import ConfigError
from router.schema import known

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXPIRY = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2}))?")  # as the schema


def auth_references(loaded: LoadedConfig, handlers: Collection[str]) -> list[ConfigError]:
    """Each api key name is used once, names a declared team, expires on a real date; no key is
    given twice among the client keys, nor among the admin keys."""
    auth = loaded.data.get("auth")
    auth = auth if isinstance(auth, dict) else {}
    teams = auth.get("teams")
    teams = teams if isinstance(teams, dict) else {}
    errs: list[ConfigError] = []
    names: dict[str, int] = {}
    for i, key in _entries(auth, "api_keys"):
        name = key.get("name")
        if isinstance(name, str):
            if name in names:
                errs.append(loaded.locate(("auth", "api_keys", i, "name"), f"api key name '{name}' is used twice"))
            names[name] = i
        errs += _entry_errors(loaded, i, key, teams)
    for section in ("api_keys", "admin_keys"):
        errs += _same_key_errors(loaded, section, auth)
    return errs + _unpriced_budgets(loaded, auth, teams)


def _unpriced_budgets(loaded: LoadedConfig, auth: dict[str, Any], teams: dict[str, Any]) -> list[ConfigError]:
    """A ``usd`` budget needs the ``prices`` section: without any price every request costs 0 and
    the budget would never be reached. (A model missing from a price table costs 0 too: said in
    the README, not an error, since patterns and mappings decide which models are served.)"""
    if loaded.data.get("prices"):
        return []
    owners: list[tuple[tuple[str | int, ...], str, dict[str, Any]]]
    owners = [(("auth", "api_keys", i), f"api key '{key.get('name')}'", key) for i, key in _entries(auth, "api_keys")]
    owners += [(("auth", "teams", name), f"team '{name}'", body)
               for name, body in teams.items() if isinstance(body, dict)]
    errs = []
    for path, label, entry in owners:
        budget = entry.get("budget")
        if isinstance(budget, dict) and budget.get("usd") is not None:
            errs.append(loaded.locate((*path, "budget", "usd"), f"{label} has a usd budget but no price is "
                                      "declared: add a prices section (USD per million tokens per provider/model)"))
    return errs


def _entries(auth: dict[str, Any], section: str) -> Iterator[tuple[int, dict[str, Any]]]:
    entries = auth.get(section)
    for i, entry in enumerate(entries if isinstance(entries, list) else ()):
        if isinstance(entry, dict):
            yield i, entry


def _entry_errors(loaded: LoadedConfig, i: int, key: dict[str, Any], teams: dict[str, Any]) -> list[ConfigError]:
    errs: list[ConfigError] = []
    label = f"api key '{key.get('name')}'"
    team = key.get("team")
    if isinstance(team, str) and team and team not in teams:
        errs.append(loaded.locate(("auth", "api_keys", i, "team"),
                                  f"{label} names unknown team '{team}' {known(teams)}: declare it under auth.teams"))
    expires = key.get("expires")
    if isinstance(expires, str) and _EXPIRY.fullmatch(expires):
        try:
            parse_expiry(expires)
        except ValueError as e:
            errs.append(loaded.locate(("auth", "api_keys", i, "expires"),
                                      f"{label}: expires '{expires}' is not a real date or time ({e})"))
    return errs


def _same_key_errors(loaded: LoadedConfig, section: str, auth: dict[str, Any]) -> list[ConfigError]:
    """A key given twice (as the same value, or as a value and its hash) would be two names for one
    caller: the error names both entries, never the key."""
    errs: list[ConfigError] = []
    seen: dict[bytes, tuple[int, Any]] = {}
    for i, entry in _entries(auth, section):
        digest = _digest(entry)
        if digest is None:
            continue
        if digest in seen:
            first, name = seen[digest]
            at, what = loaded.locate(("auth", section, first), ""), section.removesuffix("s").replace("_", " ")
            errs.append(loaded.locate(("auth", section, i), f"{what} '{entry.get('name')}' has the same key as "
                                                            f"'{name}' ({at.file}:{at.line}): one key, one name"))
        else:
            seen[digest] = (i, entry.get("name"))
    return errs


def _digest(entry: dict[str, Any]) -> bytes | None:
    """The entry's key digest, when it has exactly one well-formed, non-empty key or hash."""
    key, hashed = entry.get("key"), entry.get("key_sha256")
    if isinstance(key, str) and key and hashed is None:
        return key_digest(key)
    if isinstance(hashed, str) and _SHA256.fullmatch(hashed) and key is None:
        return bytes.fromhex(hashed)
    return None
