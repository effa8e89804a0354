"""What a snapshot serves, in a few log lines: per provider live or SIMULATED (and why), and the auth
mode in effect (and why, for ``auto``).

An operator reading the start-up log must not have to guess whether the gateway talks to a real
upstream: a provider whose accounts have no key silently falls back (usually to the bundled
simulator), so the line says so and names the variables that would have given it a key. Only names,
hosts and counts are shown, never a value that came from a variable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from router.config import LoadedConfig
from router.reachability import key_hint, key_sources
from router.server import LOOPBACK_HOSTS
from router.snapshot import BUILTIN_SIMULATOR, Provider, Snapshot


@dataclass(frozen=True)
class Line:
    level: int
    message: str
    fields: dict[str, Any] = field(default_factory=dict, compare=False)  # ``extra`` for JSON logs


def describe(snap: Snapshot, loaded: LoadedConfig, bind_host: str | None = None) -> list[Line]:
    """One line per provider, then one for auth."""
    raw = loaded.data.get("providers") or {}
    lines = [_provider_line(snap, name, p, raw, loaded) for name, p in snap.providers.items()]
    lines.append(_auth_line(snap, loaded, bind_host))
    return lines


def _simulated(raw: dict[str, Any], name: str) -> bool:
    return str((raw.get(name) or {}).get("base_url", "")).rstrip("/") == BUILTIN_SIMULATOR


def _provider_line(snap: Snapshot, name: str, p: Provider, raw: dict[str, Any], loaded: LoadedConfig) -> Line:
    n = len(p.pool.accounts)
    if n:
        if _simulated(raw, name):
            return Line(logging.INFO, f"provider {name}: SIMULATED (base_url {BUILTIN_SIMULATOR}), {n} account(s)",
                        {"provider": name, "state": "simulated", "accounts": n})
        url = p.public()["base_url"]
        return Line(logging.INFO, f"provider {name}: live at {url}, {n} account(s)",
                    {"provider": name, "state": "live", "upstream": url, "accounts": n})
    why = _no_key_reason(name, loaded)
    target = snap.provider(name)
    if target is None or target is p or not target.pool.accounts:
        return Line(logging.WARNING, f"provider {name}: UNAVAILABLE ({why}; no fallback with an account): "
                    f"requests mapped to it fail with 503", {"provider": name, "state": "unavailable"})
    m = len(target.pool.accounts)
    if _simulated(raw, target.name):
        return Line(logging.WARNING, f"provider {name}: SIMULATED via {target.name} ({why})",
                    {"provider": name, "state": "simulated", "via": target.name, "accounts": m})
    url = target.public()["base_url"]
    return Line(logging.WARNING, f"provider {name}: live via fallback {target.name} at {url}, {m} account(s) ({why})",
                {"provider": name, "state": "fallback", "via": target.name, "upstream": url, "accounts": m})


def _no_key_reason(name: str, loaded: LoadedConfig) -> str:
    """"no account has a key: set A or B", from the variables the provider's keys are read from."""
    section = (loaded.data.get("providers") or {}).get(name) or {}
    hint = key_hint(*key_sources(loaded, name, section)[1:])
    return "no account has a key: " + (hint or f"give providers.{name} accounts with an api_key or a key_list")


def _auth_line(snap: Snapshot, loaded: LoadedConfig, bind_host: str | None) -> Line:
    written = str((loaded.data.get("auth") or {}).get("mode", "auto"))
    server = snap.server
    host = bind_host or server.host
    if written != "auto":
        why = f"auth.mode: {written}"
    elif server.allow_lan_access:
        why = "auto: server.allow_lan_access is true"
    elif host not in LOOPBACK_HOSTS:
        why = f"auto: listening on {host}, not loopback-only"
    else:
        why = f"auto: listening on {host}, loopback-only"
    auth = snap.auth
    if auth.admin_keys:
        admin = f"admin endpoints need one of {len(auth.admin_keys)} admin key(s)"
    else:
        admin = "no admin keys: admin endpoints " + ("open" if auth.mode == "off" else "take a client key")
    exposed_open = auth.mode == "off" and (server.allow_lan_access or host not in LOOPBACK_HOSTS)
    message = f"auth: {auth.mode} ({why}); {len(auth.keys)} client key(s), {admin}"
    if exposed_open:
        message += f"; anyone who can reach {host} can use the gateway"
    return Line(logging.WARNING if exposed_open else logging.INFO, message,
                {"auth_mode": auth.mode, "auth_reason": why, "client_keys": len(auth.keys),
                 "admin_keys": len(auth.admin_keys)})
