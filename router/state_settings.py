"""The ``state:`` section: where the state that outlives a request lives (``memory`` or ``redis``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from router.config import LoadedConfig
from router.errors import ConfigError
from router.retry import parse_duration


@dataclass(frozen=True, slots=True)
class StateSettings:
    backend: str = "memory"
    url: str = field(default="", repr=False)  # may carry a password: never shown
    prefix: str = "router"
    timeout: float = 0.05  # seconds per Redis command
    connect_timeout: float = 0.2
    sync_interval: float = 1.0  # pools read back, and a backend that is down tried again
    sticky_ttl: float = 3600.0
    limits_when_down: str = "open"  # client limits while Redis is unreachable: per process (open) or a 503
    lease_ttl: float = 30.0  # a concurrency slot taken in Redis, unless its gateway renews it (a crash frees it)

    @property
    def shared(self) -> bool:
        return self.backend != "memory"

    def public(self) -> dict[str, Any]:
        """What admin views show: the backend and its address without credentials."""
        return {"backend": self.backend, "prefix": self.prefix, "address": _address(self.url)}


def _address(url: str) -> str | None:
    """``redis://host:port/db`` of a URL, without user, password or query (which may hold one too)."""
    if not url:
        return None
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.partition('?')[0].rpartition('@')[2]}"


def compile_state(section: dict[str, Any] | None) -> StateSettings:
    section = section or {}
    d = StateSettings()
    return StateSettings(
        backend=str(section.get("backend", d.backend)),
        url=str(section.get("url", "")),
        prefix=str(section.get("prefix", d.prefix)),
        timeout=parse_duration(section.get("timeout"), d.timeout) or d.timeout,
        connect_timeout=parse_duration(section.get("connect_timeout"), d.connect_timeout) or d.connect_timeout,
        sync_interval=parse_duration(section.get("sync_interval"), d.sync_interval) or d.sync_interval,
        sticky_ttl=parse_duration(section.get("sticky_ttl"), d.sticky_ttl) or d.sticky_ttl,
        limits_when_down=str(section.get("limits_when_down", d.limits_when_down)),
        lease_ttl=parse_duration(section.get("lease_ttl"), d.lease_ttl) or d.lease_ttl,
    )


def state_references(loaded: LoadedConfig, handlers: Collection[str]) -> list[ConfigError]:
    """``backend: redis`` needs redis-py (the ``redis`` extra), which the quick start does without, a
    URL it can parse (said without the URL: it may hold a password), and a ``lease_ttl`` its renewals
    (once a ``sync_interval``) can keep."""
    section = loaded.data.get("state")
    if not isinstance(section, dict) or section.get("backend") != "redis":
        return []
    try:
        settings = compile_state(section)
    except ValueError:
        return []  # a bad duration: the schema says what is wrong
    if settings.lease_ttl < 3 * settings.sync_interval:  # renewed once a sync_interval: two chances at least
        return [loaded.locate(("state", "lease_ttl") if "lease_ttl" in section else ("state", "sync_interval"),
                              f"lease_ttl ({settings.lease_ttl:g}s) must be at least 3 times sync_interval "
                              f"({settings.sync_interval:g}s): concurrency leases are renewed once a sync")]
    if importlib.util.find_spec("redis") is None:
        return [loaded.locate(("state", "backend"),
                              "backend 'redis' needs redis-py: pip install 'declarative-llm-router[redis]'")]
    url = section.get("url")
    if not isinstance(url, str):
        return []  # the schema says what is wrong
    if not _parses(url):
        return [loaded.locate(("state", "url"), "not a Redis URL: redis://[user:password@]host:port/db, rediss://... "
                                                "(TLS) or unix:///path")]
    return []


def _parses(url: str) -> bool:
    from redis.connection import parse_url

    if not url.startswith(("redis://", "rediss://", "unix://")):
        return False
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except ValueError:
        return False
    return True
