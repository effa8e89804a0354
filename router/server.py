"""The ``server`` section compiled: the listener, body and time limits, the Responses store, template budgets.

``auth`` is compiled beside it because ``auth.mode: auto`` depends on the address actually listened on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.auth import AuthPolicy, compile_auth
from router.retry import parse_duration
from router.template_budget import DEFAULT_LIMITS, TemplateLimits

DEFAULT_PORT = 8045
# What one upstream answer may hold in memory (server.upstream_limits): a non-stream body after
# decompression, and one SSE event. 32 MiB fits the largest real answers (a Gemini image response
# with 4K inline data, an OpenAI Responses stream's final event repeating the whole output) while a
# hostile upstream costs at most this much per attempt instead of its whole body.
DEFAULT_MAX_UPSTREAM_BODY = 32 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 32 * 1024 * 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int
    allow_lan_access: bool
    max_body_bytes: int
    body_timeout: float | None  # seconds a client has to send its whole request body (None: no limit)
    shutdown_grace: float
    reload_debounce: float
    response_store_items: int
    response_store_ttl: float
    require_keys: bool = False  # a provider without a key is a config error, not a silent fallback
    upstream_max_body_bytes: int = DEFAULT_MAX_UPSTREAM_BODY  # server.upstream_limits.max_body_bytes
    upstream_max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES  # server.upstream_limits.max_event_bytes
    template_limits: TemplateLimits = DEFAULT_LIMITS


def compile_server(section: dict[str, Any] | None) -> Server:
    section = section or {}
    lan = bool(section.get("allow_lan_access", False))
    store = section.get("response_store") or {}
    upstream = section.get("upstream_limits") or {}
    return Server(
        host=section.get("host") or ("0.0.0.0" if lan else "127.0.0.1"),
        port=int(section.get("port", DEFAULT_PORT)),
        allow_lan_access=lan,
        max_body_bytes=int(section.get("max_body_bytes", 100 * 1024 * 1024)),
        body_timeout=parse_duration(section.get("body_timeout"), 60.0) or None,
        shutdown_grace=parse_duration(section.get("shutdown_grace"), 30.0) or 0.0,
        reload_debounce=parse_duration(section.get("reload_debounce"), 0.3) or 0.0,
        response_store_items=int(store.get("max_items", 1000)),
        response_store_ttl=parse_duration(store.get("ttl"), 3600.0) or 0.0,
        require_keys=section.get("require_keys") is True,
        upstream_max_body_bytes=int(upstream.get("max_body_bytes", DEFAULT_MAX_UPSTREAM_BODY)),
        upstream_max_event_bytes=int(upstream.get("max_event_bytes", DEFAULT_MAX_EVENT_BYTES)),
        template_limits=template_limits(section),
    )


def template_limits(server: Any) -> TemplateLimits:
    """``server.template_limits``. Tolerant of values the schema rejects (reported there): the
    environment that checks the templates is built before the config is known to be valid."""
    section = server.get("template_limits") if isinstance(server, dict) else None
    section, d = section if isinstance(section, dict) else {}, DEFAULT_LIMITS

    def count(key: str, default: int) -> int:
        value = section.get(key)
        return value if type(value) is int and value > 0 else default

    try:
        max_time = parse_duration(section.get("max_time"), d.max_time) or 0.0  # 0: no time limit
    except ValueError:
        max_time = d.max_time
    return TemplateLimits(count("max_iterations", d.max_iterations), count("max_output_chars", d.max_output_chars),
                          max_time)


def exposed(server: Server, bind_host: str | None) -> bool:
    """Whether the address actually listened on (``--host``, else ``server.host``) is reachable from
    other machines: ``auth.mode: auto`` then protects it."""
    return server.allow_lan_access or (bind_host or server.host) not in LOOPBACK_HOSTS


def listener(data: dict[str, Any], bind_host: str | None) -> tuple[Server, AuthPolicy]:
    """The server settings and the auth policy in effect on the address actually listened on."""
    server = compile_server(data.get("server"))
    return server, compile_auth(data.get("auth"), exposed(server, bind_host))
