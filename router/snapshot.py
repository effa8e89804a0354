"""Compile a loaded config into an immutable Snapshot: everything the request path needs, prebuilt.

A reload builds a whole new snapshot first (load → validate → cross-check → compile) and only a fully
good one is swapped in; a request keeps the snapshot it started with until it ends. ``SECTIONS`` is the
table of the config's top-level keys: each one's schema, compile step, cross-reference check and what
the gateway does when a snapshot holding it goes live.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jinja2 import TemplateSyntaxError

from router.accounts import Pool, compile_accounts
from router.auth import AuthPolicy, compile_auth
from router.auth_checks import auth_references
from router.circuit import compile_circuit, provider_circuit
from router.codecs import UpstreamCodec
from router.config import LoadedConfig, load_dir
from router.config_checks import auth_errors, completeness_errors, rejected_by
from router.credential_kinds import credential_errors
from router.errors import ConfigError, ConfigErrors
from router.mapping import ModelMapper, compile_mapping
from router.prices import PriceTable, compile_prices, prices_references
from router.reachability import provider_errors
from router.registry import ENDPOINTS, UPSTREAM_CODECS
from router.retry import Policy, compile_policies, parse_duration
from router.routes import RouteTable, compile_routes
from router.schema import mapping_references, provider_references, route_references, schema_errors
from router.sections import (
    Compiling,
    Section,
    apply_logging,
    compile_sections,
    configure_usage,
    reference_errors,
    resize_stores,
    use_state,
)
from router.server import Server, compile_server, exposed, template_limits
from router.state_settings import StateSettings, compile_state, state_references
from router.telemetry import configure_telemetry
from router.telemetry_settings import TelemetrySettings, compile_telemetry, telemetry_references
from router.template_budget import DEFAULT_LIMITS, TemplateLimits, header_limits
from router.template_sandbox import GuardedEnvironment
from router.templates import CompiledTree, compile_tree, make_environment, template_errors
from router.usage import UsageSettings, compile_usage

HANDLERS = frozenset(ENDPOINTS)  # the handler names a route may name (router.registry)

BUILTIN_SIMULATOR = "builtin:simulator"


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
    inbound_templates: dict[str, Template]  # same-dialect passthrough etc., keyed by client codec name
    retry: Policy
    timeouts: Timeouts
    pool: Pool
    session_header: str
    models: tuple[str, ...]
    codec: UpstreamCodec  # how its answers are decoded: the registry's codec for ``dialect``
    params: dict[str, Any] = field(default_factory=dict)  # ``provider.params`` in templates (project, api_version)
    telemetry_name: str = ""  # its gen_ai.provider.name in traces ("": the dialect's, router.telemetry_spans)
    _public: dict[str, str] = field(init=False, repr=False, compare=False)
    template_view: dict[str, Any] = field(init=False, repr=False, compare=False)  # ``provider`` in templates

    def __post_init__(self) -> None:
        object.__setattr__(self, "template_view", {"name": self.name, "base_url": self.base_url,
                                                   "params": self.params})
        u = urlsplit(self.base_url)  # safe to show: no userinfo or query (either may carry a credential)
        netloc = u.hostname or ""
        if u.port:
            netloc += f":{u.port}"
        object.__setattr__(self, "_public", {
            "name": self.name, "dialect": self.dialect,
            "base_url": urlunsplit((u.scheme, netloc, u.path, "", "")) if u.scheme else self.base_url})

    def public(self) -> dict[str, str]:
        """Name, dialect and the base URL without credentials. Shared, built once: callers copy it
        before changing it (templates cannot: their environment is immutable)."""
        return self._public


@dataclass(frozen=True, slots=True)
class Logging:
    """The ``logging`` section: applied on every swap (sections.apply_logging)."""

    level: str = "info"
    format: str = "text"
    access_log: bool = True


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
    fallbacks: dict[str, str]  # provider without an account -> the provider serving in its place
    response_headers: CompiledTree  # renders {header: value}; none/undefined values are left out
    # rendered response headers by (upstream model, client model, provider, account) when the template
    # reads nothing else (see exchange.response_headers); a cache that lives and dies with the snapshot
    header_cache: dict[tuple[Any, ...], dict[str, str]] = field(default_factory=dict, compare=False, repr=False)
    logging: Logging = field(default_factory=Logging)
    state: StateSettings = field(default_factory=StateSettings)
    prices: PriceTable = field(default_factory=PriceTable)  # what usage costs (budgets in usd, /admin/usage)
    usage: UsageSettings = field(default_factory=UsageSettings)  # the usage ledger's bounds
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)  # tracing (router.telemetry)

    def provider(self, name: str) -> Provider | None:
        """The provider serving ``name``, following ``fallback`` while it has no account."""
        seen = set()
        while name in self.fallbacks and name not in seen:
            seen.add(name)
            name = self.fallbacks[name]
        return self.providers.get(name)


Providers = tuple[dict[str, Provider], dict[str, str]]  # providers by name, fallbacks of those without accounts


# One compile step per section: each reads its own part of the config and the sections before it.


def _auth(c: Compiling) -> AuthPolicy:
    """``auth.mode: auto`` protects a listener that is not loopback-only."""
    return compile_auth(c.data.get("auth"), exposed(c[SERVER], c.bind_host))


def _templates(c: Compiling) -> dict[str, Template]:
    return {name: _template(c.env, name, t) for name, t in (c.data.get("templates") or {}).items()}


def _providers(c: Compiling) -> Providers:
    providers: dict[str, Provider] = {}
    fallbacks: dict[str, str] = {}
    for name, section in (c.data.get("providers") or {}).items():
        providers[name] = _provider(c, name, section)
        if not providers[name].pool.accounts and section.get("fallback"):
            fallbacks[name] = section["fallback"]
    return providers, fallbacks


def _provider(c: Compiling, name: str, p: dict[str, Any]) -> Provider:
    base_url = p["base_url"].rstrip("/")
    if base_url == BUILTIN_SIMULATOR:
        base_url = c.builtins.get(BUILTIN_SIMULATOR, base_url)
    templates, tspec = c[TEMPLATES], p["template"] if isinstance(p["template"], dict) else {"default": p["template"]}
    return Provider(
        name=name, dialect=p["dialect"], base_url=base_url, template=templates[tspec["default"]],
        inbound_templates={k: templates[v] for k, v in tspec.items() if k != "default"},
        retry=c[RETRY_POLICIES][p.get("retry", "default")], timeouts=_timeouts(p.get("timeouts")),
        pool=Pool(name, compile_accounts(name, p), p.get("scheduling", "round_robin"),
                  provider_circuit(c[CIRCUIT], p.get("circuit"))),
        session_header=p.get("session_header", "x-session-id"), models=tuple(p.get("models") or ()),
        codec=UPSTREAM_CODECS[p["dialect"]],
        params={k: dict(v) if isinstance(v, dict) else v for k, v in (p.get("params") or {}).items()},
        telemetry_name=p.get("telemetry_name", ""),
    )


def _timeouts(section: dict[str, Any] | None) -> Timeouts:
    d = Timeouts()
    section = section or {}
    return Timeouts(*(parse_duration(section.get(k), getattr(d, k)) or None
                      for k in ("connect", "first_byte", "total", "idle")))


def _response_headers(c: Compiling) -> CompiledTree:
    """Rendered on the event loop: a budget of a few milliseconds, whatever server.template_limits says."""
    return compile_tree(c.env, dict(c.data.get("response_headers") or {}), "response_headers",
                        header_limits(c.env.limits))


def _logging(c: Compiling) -> Logging:
    section = c.data.get("logging") or {}
    return Logging(str(section.get("level", "info")), str(section.get("format", "text")),
                   section.get("access_log", True) is not False)


SERVER = Section("server", "server.schema.json", lambda c: compile_server(c.data.get("server")),
                 swap=resize_stores)  # the Responses store and signature memory follow response_store
AUTH = Section("auth", "auth.schema.json", _auth, auth_references)
RETRY_POLICIES = Section("retry_policies", "retry_policies.schema.json",
                         lambda c: compile_policies(c.data.get("retry_policies")))
TEMPLATES = Section("templates", "templates.schema.json", _templates)
CIRCUIT = Section("circuit", "circuit.schema.json", lambda c: compile_circuit(c.data.get("circuit")))
# swapped in as is: account state (cooldowns, sticky sessions) lives in the gateway's StateStore by
# provider/account id, so an account that stays keeps its state and one that goes is no longer picked
PROVIDERS = Section("providers", "providers.schema.json", _providers, provider_references)
MODEL_MAPPING = Section("model_mapping", "model_mapping.schema.json",
                        lambda c: compile_mapping(c.data.get("model_mapping")), mapping_references)
ROUTES = Section("routes", "routes.schema.json", lambda c: compile_routes(c.data.get("routes") or [], ENDPOINTS),
                 route_references)
RESPONSE_HEADERS = Section("response_headers", "response_headers.schema.json", _response_headers)
LOGGING = Section("logging", "logging.schema.json", _logging, swap=apply_logging)
PRICES = Section("prices", "prices.schema.json", lambda c: compile_prices(c.data.get("prices")), prices_references)
USAGE = Section("usage", "usage.schema.json", lambda c: compile_usage(c.data.get("usage")), swap=configure_usage)
TELEMETRY = Section("telemetry", "telemetry.schema.json", lambda c: compile_telemetry(c.data.get("telemetry")),
                    telemetry_references, configure_telemetry)
# first: the stores the server section sizes are connected to the shared state it opens
STATE = Section("state", "state.schema.json", lambda c: compile_state(c.data.get("state")), state_references,
                use_state)

# In compile order: a section comes after those it reads (providers read retry_policies and templates).
SECTIONS: tuple[Section[Any], ...] = (
    STATE, SERVER, AUTH, RETRY_POLICIES, TEMPLATES, CIRCUIT, PROVIDERS, MODEL_MAPPING, ROUTES, RESPONSE_HEADERS,
    LOGGING, PRICES, USAGE, TELEMETRY)


def compile_config(loaded: LoadedConfig, generation: int, filters: Mapping[str, Callable[..., Any]],
                   builtins: Mapping[str, str] | None = None, bind_host: str | None = None,
                   require_keys: bool = False) -> Snapshot:
    """Validate and compile; raises ConfigErrors with every located problem.

    ``bind_host`` is the address actually listened on (``--host``), when it differs from the config:
    ``auth.mode: auto`` protects any listener that is not loopback-only. ``require_keys``
    (``--require-keys``, or ``server.require_keys``) makes a provider without a key an error.
    """
    env = make_environment(dict(filters), template_limits(loaded.data.get("server")))
    errors = config_errors(loaded, env, bind_host, require_keys)
    if errors:
        raise ConfigErrors(errors)
    c = compile_sections(SECTIONS, Compiling(loaded.data, env, bind_host, dict(builtins or {})))
    providers, fallbacks = c[PROVIDERS]
    return Snapshot(
        generation=generation, loaded_at=time.time(), files=tuple(loaded.files), server=c[SERVER], auth=c[AUTH],
        routes=c[ROUTES], mapper=c[MODEL_MAPPING], providers=providers, fallbacks=fallbacks,
        response_headers=c[RESPONSE_HEADERS], logging=c[LOGGING], state=c[STATE], prices=c[PRICES],
        usage=c[USAGE], telemetry=c[TELEMETRY],
    )


def config_errors(loaded: LoadedConfig, env: GuardedEnvironment, bind_host: str | None = None,
                  require_keys: bool = False) -> list[ConfigError]:
    """Every problem of a loaded config in one pass, sorted by location: files, schema, cross
    references, template syntax, auth keys, completeness and providers that cannot serve. Later
    checks skip the data the schema rejected instead of tripping over it."""
    schema = schema_errors(loaded)
    rejected = rejected_by([*schema, *loaded.errors])
    errors = [*loaded.errors, *schema, *cross_reference_errors(loaded, HANDLERS)]
    errors += _template_syntax_errors(loaded, env)
    errors += completeness_errors(loaded, rejected)
    errors += auth_errors(loaded, bind_host, rejected)
    server = loaded.data.get("server")
    require = require_keys or (isinstance(server, dict) and server.get("require_keys") is True)
    errors += provider_errors(loaded, require, rejected)
    errors += credential_errors(loaded, rejected)
    return sorted(set(errors), key=lambda e: (e.file, e.line, e.column, e.message))


def cross_reference_errors(loaded: LoadedConfig, handlers: Collection[str]) -> list[ConfigError]:
    """Names that must exist (handlers, providers, templates, retry policies) and names defined twice
    (routes, api keys): every section's own check. ``handlers``: the names a route may name."""
    return reference_errors(SECTIONS, loaded, handlers)


def _template_syntax_errors(loaded: LoadedConfig, env: GuardedEnvironment) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for section in ("templates", "response_headers"):
        entries = loaded.data.get(section)
        for name, tpl in (entries.items() if isinstance(entries, dict) else ()):
            errors += [loaded.locate(ptr, msg) for ptr, msg in template_errors(env, tpl, (section, name))]
    return errors


def _template(env: GuardedEnvironment, name: str, t: dict[str, Any]) -> Template:
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
