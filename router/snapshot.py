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
from router.config import LoadedConfig, Pointer, load_dir, pointer_text
from router.errors import ConfigError, ConfigErrors
from router.mapping import ModelMapper, compile_mapping
from router.reachability import provider_errors
from router.retry import DEFAULT_POLICY, Policy, compile_policy, parse_duration
from router.routes import RouteTable, compile_routes
from router.schema import cross_reference_errors, schema_errors
from router.template_budget import DEFAULT_LIMITS, TemplateLimits, header_limits
from router.templates import CompiledTree, compile_tree, make_environment, template_errors

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
# What one upstream answer may hold in memory (server.upstream_limits): a non-stream body after
# decompression, and one SSE event. 32 MiB fits the largest real answers (a Gemini image response
# with 4K inline data, an OpenAI Responses stream's final event repeating the whole output) while a
# hostile upstream costs at most this much per attempt instead of its whole body.
DEFAULT_MAX_UPSTREAM_BODY = 32 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 32 * 1024 * 1024


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
    url: CompiledTree
    query: CompiledTree | None
    headers: CompiledTree | None
    body: CompiledTree
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
    body_timeout: float | None  # seconds a client has to send its whole request body (None: no limit)
    shutdown_grace: float
    reload_debounce: float
    response_store_items: int
    response_store_ttl: float
    require_keys: bool = False  # a provider without a key is a config error, not a silent fallback
    upstream_max_body_bytes: int = DEFAULT_MAX_UPSTREAM_BODY  # server.upstream_limits.max_body_bytes
    upstream_max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES  # server.upstream_limits.max_event_bytes
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
    response_headers: CompiledTree  # renders {header: value}; none/undefined values are left out
    # rendered response headers by (upstream model, client model, provider, account) when the template
    # reads nothing else (see exchange.response_headers); a cache that lives and dies with the snapshot
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


def _listener(data: dict[str, Any], bind_host: str | None) -> tuple[Server, AuthPolicy]:
    """The server settings and the auth policy in effect on the address actually listened on."""
    server = _server(data.get("server") or {})
    exposed = server.allow_lan_access or (bind_host or server.host) not in LOOPBACK_HOSTS
    return server, compile_auth(data.get("auth"), exposed)


def _timeouts(section: dict[str, Any] | None) -> Timeouts:
    d = Timeouts()
    section = section or {}
    return Timeouts(*(parse_duration(section.get(k), getattr(d, k)) or None
                      for k in ("connect", "first_byte", "total", "idle")))


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def compile_config(loaded: LoadedConfig, generation: int, filters: Mapping[str, Callable[..., Any]],
                   builtins: Mapping[str, str] | None = None, bind_host: str | None = None,
                   require_keys: bool = False) -> Snapshot:
    """Validate and compile; raises ConfigErrors with every located problem.

    ``bind_host`` is the address actually listened on (``--host``), when it differs from the config:
    ``auth.mode: auto`` protects any listener that is not loopback-only. ``require_keys``
    (``--require-keys``, or ``server.require_keys``) makes a provider without a key an error.
    """
    env = make_environment(dict(filters), _template_limits(loaded.data.get("server")))
    errors = config_errors(loaded, env, bind_host, require_keys)
    if errors:
        raise ConfigErrors(errors)
    data = loaded.data
    server, auth = _listener(data, bind_host)
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
    # rendered on the event loop: a budget of a few milliseconds, whatever server.template_limits says
    headers = compile_tree(env, dict(data.get("response_headers") or {}), "response_headers",
                           header_limits(env.limits))
    return Snapshot(
        generation=generation, loaded_at=time.time(), files=tuple(loaded.files), server=server, auth=auth,
        routes=compile_routes(data.get("routes") or []), mapper=compile_mapping(data.get("model_mapping")),
        providers=providers, fallbacks=fallbacks, response_headers=headers,
        logging=dict(data.get("logging") or {}),
    )


def config_errors(loaded: LoadedConfig, env: Any, bind_host: str | None = None, require_keys: bool = False
                  ) -> list[ConfigError]:
    """Every problem of a loaded config in one pass, sorted by location: files, schema, cross
    references, template syntax, auth keys, completeness and providers that cannot serve. Later
    checks skip the data the schema rejected instead of tripping over it."""
    schema = schema_errors(loaded)
    rejected = _rejected([*schema, *loaded.errors])
    data = loaded.data
    errors = [*loaded.errors, *schema, *cross_reference_errors(loaded, HANDLERS)]
    errors += _template_syntax_errors(loaded, env)
    errors += _completeness_errors(loaded, rejected)
    if not rejected(("auth",)) and not rejected(("server",)):
        errors += _auth_errors(loaded, bind_host)
    server = data.get("server") if isinstance(data.get("server"), dict) else {}
    require = require_keys or server.get("require_keys") is True
    errors += provider_errors(loaded, require, rejected)
    return sorted(set(errors), key=lambda e: (e.file, e.line, e.column, e.message))


def _rejected(found: list[ConfigError]) -> Callable[[Pointer], bool]:
    """Whether the schema (or ``${...}`` resolution) rejected the data at, above or under a pointer."""
    bad = [e.pointer for e in found if e.pointer]

    def rejected(pointer: Pointer) -> bool:
        text = pointer_text(pointer)
        return any(b == text or b.startswith(text + "/") or text.startswith(b + "/") for b in bad)

    return rejected


def _template_syntax_errors(loaded: LoadedConfig, env: Any) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for section in ("templates", "response_headers"):
        entries = loaded.data.get(section)
        for name, tpl in (entries.items() if isinstance(entries, dict) else ()):
            errors += [loaded.locate(ptr, msg) for ptr, msg in template_errors(env, tpl, (section, name))]
    return errors


def _completeness_errors(loaded: LoadedConfig, rejected: Callable[[Pointer], bool]) -> list[ConfigError]:
    """A config with no routes answers nothing, one with no providers serves no model. Not reported
    when a file could not be read or parsed: its routes may be the missing ones."""
    if any(not e.pointer for e in loaded.errors):
        return []
    errors = []
    for section, what in (("routes", "no routes: the gateway would answer nothing (add a 'routes' list)"),
                          ("providers", "no providers: no model could be served (add a 'providers' section)")):
        if not loaded.data.get(section) and not rejected((section,)):
            errors.append(loaded.locate((section,), what))
    return errors


def _auth_errors(loaded: LoadedConfig, bind_host: str | None) -> list[ConfigError]:
    """A mode that needs keys with none defined: a LAN-exposed gateway never runs open by accident."""
    data = loaded.data
    _, auth = _listener(data, bind_host)
    if auth.mode == "off" or auth.keys:
        return []
    written = (data.get("auth") or {}).get("mode", "auto")
    why = f"auth mode '{written}'" + (f" (= {auth.mode} on a non-loopback listener)" if written == "auto" else "")
    return [loaded.locate(("auth", "mode") if data.get("auth") else ("server", "allow_lan_access"),
                          f"{why} needs at least one api key with a non-empty key")]


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
          env: Mapping[str, str] | None = None, builtins: Mapping[str, str] | None = None,
          require_keys: bool = False, placeholders: bool = False) -> tuple[Snapshot, LoadedConfig]:
    """Load and compile a config dir in one step."""
    loaded = load_dir(directory, env, placeholders)
    return compile_config(loaded, generation, filters, builtins, require_keys=require_keys), loaded


def check(directory: str | Path, filters: Mapping[str, Callable[..., Any]],
          env: Mapping[str, str] | None = None, require_keys: bool = False, placeholders: bool = False
          ) -> list[ConfigError]:
    """Every problem in a config dir (empty when valid)."""
    return check_dir(directory, filters, env, require_keys, placeholders)[1]


def check_dir(directory: str | Path, filters: Mapping[str, Callable[..., Any]],
              env: Mapping[str, str] | None = None, require_keys: bool = False, placeholders: bool = False
              ) -> tuple[LoadedConfig, list[ConfigError]]:
    """What ``router check`` reports: the files read and every problem (empty when valid)."""
    loaded = load_dir(directory, env, placeholders)
    try:
        compile_config(loaded, 0, filters, require_keys=require_keys)
    except ConfigErrors as e:
        return loaded, e.errors
    return loaded, []
