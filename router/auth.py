"""Client authentication: modes, named keys, constant-time comparison."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODES = ("off", "strict", "all_except_health", "auto")


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    key: bytes


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    mode: str  # effective mode: off | strict | all_except_health (auto already resolved)
    keys: tuple[ApiKey, ...]
    admin_keys: tuple[ApiKey, ...] = ()

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

    def identify(self, presented: str | None, keys: tuple[ApiKey, ...] | None = None) -> ApiKey | None:
        """The named key matching ``presented``; every key is compared, in constant time each."""
        if not presented:
            return None
        candidate = presented.encode()
        found = None
        for k in self.keys if keys is None else keys:
            if hmac.compare_digest(candidate, k.key) and found is None:
                found = k
        return found


def presented_key(headers: Mapping[str, str], key_headers: tuple[str, ...]) -> str | None:
    """The key a client sent: ``Authorization: Bearer``, then each of ``key_headers`` (the API
    families' own key headers, ``router.registry.KEY_HEADERS``) in order."""
    auth = _header(headers, "Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name in key_headers:
        given = _header(headers, name)
        if given:
            return given
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive; plain dicts (tests, other callers) usually are lower-case.
    return headers.get(name) or headers.get(name.lower()) or headers.get(name.title())


def compile_auth(section: dict[str, Any] | None, allow_lan_access: bool) -> AuthPolicy:
    section = section or {}
    mode = section.get("mode", "auto")
    if mode == "auto":
        mode = "all_except_health" if allow_lan_access else "off"
    return AuthPolicy(mode, _keys(section.get("api_keys")), _keys(section.get("admin_keys")))


def _keys(entries: list[dict[str, Any]] | None) -> tuple[ApiKey, ...]:
    """Named keys; an entry whose key resolved to "" (unset variable) is left out."""
    return tuple(ApiKey(k["name"], k["key"].encode()) for k in entries or [] if k.get("key"))
