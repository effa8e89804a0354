"""Compile a loaded config into an immutable Snapshot: everything the request path needs, prebuilt.

A reload builds a whole new snapshot first (load → validate → cross-check → compile) and only a fully
good one is swapped in; a request keeps the snapshot it started with until it ends.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from jinja2 import TemplateSyntaxError

from router.accounts import Pool, compile_accounts
from router.auth import AuthPolicy, compile_auth
from router.config import LoadedConfig, load_dir
from router.errors import ConfigError, ConfigErrors
from router.mapping import ModelMapper, compile_mapping
from router.retry import DEFAULT_POLICY, Policy, compile_policy, parse_duration
from router.routes import RouteTable, compile_routes
from router.schema import cross_reference_errors, schema_errors
from router.template_budget import DEFAULT_LIMITS, TemplateLimits
from router.templates import _Node, compile_tree, make_environment, template_errors

# The handler names a route may name; the app implements each one.
HANDLERS = frozenset({
    "health", "models.list", "models.get",
    "openai.chat", "openai.completions", "openai.responses",
    "anthropic.messages", "anthropic.count_tokens", "anthropic.models",
    "gemini.generate", "gemini.stream", "gemini.count_tokens", "gemini.models",
    "admin.config", "admin.reload", "admin.accounts", "admin.account_reset", "metrics",
})

BUILTIN_SIMULATOR = "builtin:simulator"
DEFAULT_PORT = 8045


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; None (written as 0) means no limit."""

    connect: float | None = 20.0
    first_byte: float | None = 300.0
    total: float | None = 600.0
    idle: float | None = 120.0


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    method: str
    url: _Node
    query: _Node | None
    headers: _Node | None
    body: _Node
    limits: TemplateLimits = DEFAULT_LIMITS  # the render budget of its Jinja leaves
    # some part falls back to Jinja: rendered under one budget, off the event loop (engine._attempt)
    jinja: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = (self.url, self.query, self.headers, self.body)
        object.__setattr__(self, "jinja", any(p is not None and p.jinja for p in parts))


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    dialect: str
    base_url: str
    template: Template
    inbound_templates: dict[str, Template]  # same-dialect passthrough etc., keyed by client dialect
    retry: Policy
    timeouts: Timeouts
    pool: Pool
    session_header: str
    models: tuple[str, ...]
    _public: dict[str, Any] = field(init=False, repr=False, compare=False)
    template_view: dict[str, str] = field(init=False, repr=False, compare=False)  # ``provider`` in templates

    def __post_init__(self) -> None:
        object.__setattr__(self, "template_view", {"name": self.name, "base_url": self.base_url})
        u = urlsplit(self.base_url)  # safe to show: no userinfo or query (either may carry a credential)
        netloc = u.hostname or ""
        if u.port:
            netloc += f":{u.port}"
        object.__setattr__(self, "_public", {
            "name": self.name, "dialect": self.dialect,
            "base_url": urlunsplit((u.scheme, netloc, u.path, "", "")) if u.scheme else self.base_url})

    def public(self) -> dict[str, Any]:
        """Name, dialect and the base URL without credentials. Shared, built once: callers copy it
        before changing it (templates cannot: their environment is immutable)."""
        return self._public


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int
    allow_lan_access: bool
    max_body_bytes: int
    shutdown_grace: float
    reload_debounce: float
    response_store_items: int
    response_store_ttl: float
    template_limits: TemplateLimits = DEFAULT_LIMITS


@dataclass(frozen=True)
class Snapshot:
    generation: int
    loaded_at: float
    files: tuple[tuple[str, str], ...]
    server: Server
    auth: AuthPolicy
    routes: RouteTable
    mapper: ModelMapper
    providers: dict[str, Provider]
    fallbacks: dict[str, str]
    response_headers: _Node  # renders {header: value}; none/undefined values are left out
    # rendered response headers by (upstream model, client model, provider, account) when the template
    # reads nothing else (see engine.response_headers); a cache that lives and dies with the snapshot
    header_cache: dict[tuple[Any, ...], dict[str, str]] = field(default_factory=dict, compare=False, repr=False)
    logging: dict[str, Any] = field(default_factory=dict)

    def provider(self, name: str) -> Provider | None:
        """The provider serving ``name``, following ``fallback`` while it has no account."""
        seen = set()
        while name in self.fallbacks and name not in seen:
            seen.add(name)
            name = self.fallbacks[name]
        return self.providers.get(name)


def _server(section: dict[str, Any]) -> Server:
    lan = bool(section.get("allow_lan_access", False))
    store = section.get("response_store") or {}
    return Server(
        host=section.get("host") or ("0.0.0.0" if lan else "127.0.0.1"),
        port=int(section.get("port", DEFAULT_PORT)),
        allow_lan_access=lan,
        max_body_bytes=int(section.get("max_body_bytes", 100 * 1024 * 1024)),
        shutdown_grace=parse_duration(section.get("shutdown_grace"), 30.0) or 0.0,
        reload_debounce=parse_duration(section.get("reload_debounce"), 0.3) or 0.0,
        response_store_items=int(store.get("max_items", 1000)),
        response_store_ttl=parse_duration(store.get("ttl"), 3600.0) or 0.0,
        template_limits=_template_limits(section),
    )


def _template_limits(server: Any) -> TemplateLimits:
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


def _timeouts(section: dict[str, Any] | None) -> Timeouts:
    d = Timeouts()
    section = section or {}
    return Timeouts(*(parse_duration(section.get(k), getattr(d, k)) or None
                      for k in ("connect", "first_byte", "total", "idle")))


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def compile_config(loaded: LoadedConfig, generation: int, filters: Mapping[str, Callable[..., Any]],
                   builtins: Mapping[str, str] | None = None, bind_host: str | None = None) -> Snapshot:
    """Validate and compile; raises ConfigErrors with every located problem.

    ``bind_host`` is the address actually listened on (``--host``), when it differs from the config:
    ``auth.mode: auto`` protects any listener that is not loopback-only.
    """
    errors: list[ConfigError] = list(loaded.errors)
    errors += schema_errors(loaded)
    errors += cross_reference_errors(loaded, HANDLERS)  # tolerant of data the schema rejected
    if errors:
        raise ConfigErrors(sorted(set(errors), key=lambda e: (e.file, e.line, e.column, e.message)))
    data = loaded.data
    env = make_environment(dict(filters), _template_limits(data.get("server")))
    for name, tpl in (data.get("templates") or {}).items():
        for ptr, msg in template_errors(env, tpl, ("templates", name)):
            errors.append(loaded.locate(ptr, msg))
    for hname, text in (data.get("response_headers") or {}).items():
        for ptr, msg in template_errors(env, text, ("response_headers", hname)):
            errors.append(loaded.locate(ptr, msg))
    server = _server(data.get("server") or {})
    exposed = server.allow_lan_access or (bind_host or server.host) not in LOOPBACK_HOSTS
    auth = compile_auth(data.get("auth"), exposed)
    if auth.mode != "off" and not auth.keys:
        written = (data.get("auth") or {}).get("mode", "auto")
        why = f"auth mode '{written}'" + (f" (= {auth.mode} on a non-loopback listener)" if written == "auto" else "")
        errors.append(loaded.locate(("auth", "mode") if data.get("auth") else ("server", "allow_lan_access"),
                                    f"{why} needs at least one api key with a non-empty key"))
    if errors:
        raise ConfigErrors(errors)

    policies = {"default": DEFAULT_POLICY}
    for name, section in (data.get("retry_policies") or {}).items():
        policies[name] = compile_policy(name, section)
    templates = {name: _template(env, name, t) for name, t in (data.get("templates") or {}).items()}
    providers: dict[str, Provider] = {}
    fallbacks: dict[str, str] = {}
    builtins = builtins or {}
    for name, p in (data.get("providers") or {}).items():
        base_url = p["base_url"].rstrip("/")
        if base_url == BUILTIN_SIMULATOR:
            base_url = builtins.get(BUILTIN_SIMULATOR, base_url)
        accounts = compile_accounts(name, p)
        if not accounts and p.get("fallback"):
            fallbacks[name] = p["fallback"]
        tspec = p["template"] if isinstance(p["template"], dict) else {"default": p["template"]}
        providers[name] = Provider(
            name=name, dialect=p["dialect"], base_url=base_url, template=templates[tspec["default"]],
            inbound_templates={k: templates[v] for k, v in tspec.items() if k != "default"},
            retry=policies[p.get("retry", "default")], timeouts=_timeouts(p.get("timeouts")),
            pool=Pool(name, accounts, p.get("scheduling", "round_robin")),
            session_header=p.get("session_header", "x-session-id"), models=tuple(p.get("models") or ()),
        )
    headers = compile_tree(env, dict(data.get("response_headers") or {}), "response_headers")
    return Snapshot(
        generation=generation, loaded_at=time.time(), files=tuple(loaded.files), server=server, auth=auth,
        routes=compile_routes(data.get("routes") or []), mapper=compile_mapping(data.get("model_mapping")),
        providers=providers, fallbacks=fallbacks, response_headers=headers,
        logging=dict(data.get("logging") or {}),
    )


def _template(env: Any, name: str, t: dict[str, Any]) -> Template:
    try:
        return Template(
            name=name, method=str(t.get("method", "POST")).upper(), url=compile_tree(env, t["url"], f"{name}.url"),
            query=compile_tree(env, t["query"], f"{name}.query") if t.get("query") else None,
            headers=compile_tree(env, t["headers"], f"{name}.headers") if t.get("headers") else None,
            body=compile_tree(env, t["body"], f"{name}.body"), limits=env.limits,
        )
    except TemplateSyntaxError as e:  # already reported by template_errors; keep a clear message
        raise ConfigErrors([ConfigError("<templates>", 0, 0, f"/templates/{name}", str(e))]) from None


def build(directory: str | Path, generation: int, filters: Mapping[str, Callable[..., Any]],
          env: Mapping[str, str] | None = None, builtins: Mapping[str, str] | None = None
          ) -> tuple[Snapshot, LoadedConfig]:
    """Load and compile a config dir in one step."""
    loaded = load_dir(directory, env)
    return compile_config(loaded, generation, filters, builtins), loaded


def check(directory: str | Path, filters: Mapping[str, Callable[..., Any]],
          env: Mapping[str, str] | None = None) -> list[ConfigError]:
    """Every problem in a config dir (empty when valid); used by ``router check``."""
    try:
        build(directory, 0, filters, env)
    except ConfigErrors as e:
        return e.errors
    return []
