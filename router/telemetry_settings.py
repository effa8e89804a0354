"""The ``telemetry:`` section: OpenTelemetry tracing, and where its spans are exported.

The YAML says what the operator wants; the standard ``OTEL_*`` environment variables fill in what
it leaves out (YAML beside env: a value the YAML sets wins, as code-level configuration wins in every
OpenTelemetry SDK), then the defaults. ``OTEL_SDK_DISABLED=true`` turns tracing off whatever the
YAML says. :func:`resolve` does this once per snapshot that goes live, never per request.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from router.config import LoadedConfig
from router.errors import ConfigError
from router.retry import parse_duration

EXTRA = "pip install 'declarative-llm-router[otel]'"
HTTP, GRPC = "http/protobuf", "grpc"
DEFAULT_ENDPOINTS = {HTTP: "http://localhost:4318/v1/traces", GRPC: "http://localhost:4317"}
EXPORTER_MODULES = {HTTP: "opentelemetry.exporter.otlp.proto.http", GRPC: "opentelemetry.exporter.otlp.proto.grpc"}
EXPORTERS = ("otlp", "console", "none")
MASK = "***"


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """The section as written (None: not set in the YAML, the environment or the default decides)."""

    enabled: bool = False
    service_name: str | None = None
    sampling_ratio: float = 1.0
    record_content: bool = False
    exporter: str | None = None  # otlp | console | none
    protocol: str | None = None  # http/protobuf | grpc
    endpoint: str | None = field(default=None, repr=False)  # may carry user info
    headers: Mapping[str, str] | None = field(default=None, repr=False)  # often an API key: never shown
    timeout: float | None = None  # seconds


@dataclass(frozen=True, slots=True)
class Export:
    """Where spans go, resolved from the YAML and the environment: what builds a tracer provider
    (two equal ones need no new provider on reload)."""

    exporter: str  # otlp | console | none
    protocol: str
    endpoint: str = field(repr=False)
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    timeout: float
    service_name: str

    def public(self) -> dict[str, Any]:
        """What /admin/config shows: the endpoint without user info or query, header names only."""
        return {"exporter": self.exporter, "protocol": self.protocol, "endpoint": _public_url(self.endpoint),
                "headers": {name: MASK for name, _ in self.headers}, "timeout": self.timeout,
                "service_name": self.service_name}


@dataclass(frozen=True, slots=True)
class Resolved:
    """The settings a snapshot traces with: None when tracing is off (and why, for the log)."""

    export: Export | None
    sampling_ratio: float
    record_content: bool
    off_because: str = ""


def compile_telemetry(section: dict[str, Any] | None) -> TelemetrySettings:
    section = section or {}
    otlp = section.get("otlp") or {}
    headers = otlp.get("headers")
    return TelemetrySettings(
        enabled=section.get("enabled", False) is True,
        service_name=section.get("service_name"),
        sampling_ratio=float(section.get("sampling_ratio", 1.0)),
        record_content=section.get("record_content", False) is True,
        exporter=section.get("exporter"),
        protocol=otlp.get("protocol"),
        endpoint=otlp.get("endpoint"),
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else None,
        timeout=parse_duration(otlp.get("timeout"), 10.0) if "timeout" in otlp else None,
    )


def resolve(settings: TelemetrySettings, env: Mapping[str, str]) -> Resolved:
    """The YAML beside the environment: the YAML's values win, ``OTEL_*`` fill the rest."""
    ratio, content = settings.sampling_ratio, settings.record_content
    if not settings.enabled:
        return Resolved(None, ratio, content, "telemetry.enabled is not true")
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Resolved(None, ratio, content, "OTEL_SDK_DISABLED=true")
    exporter = settings.exporter or _first_exporter(env.get("OTEL_TRACES_EXPORTER", "")) or "otlp"
    if exporter == "none":
        return Resolved(None, ratio, content, "the traces exporter is 'none'")
    protocol = (settings.protocol or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or HTTP).strip()
    headers = settings.headers if settings.headers is not None else _env_headers(env)
    export = Export(exporter, protocol, _endpoint(settings.endpoint, protocol, env),
                    tuple(sorted(headers.items())), _timeout(settings.timeout, env),
                    settings.service_name or env.get("OTEL_SERVICE_NAME") or "router")
    return Resolved(export, ratio, content)


def _first_exporter(value: str) -> str | None:
    """``OTEL_TRACES_EXPORTER`` is a comma-separated list; the gateway exports to the first one."""
    first = value.split(",")[0].strip().lower()
    return first or None


def _endpoint(yaml: str | None, protocol: str, env: Mapping[str, str]) -> str:
    """The YAML's, else ``..._TRACES_ENDPOINT`` as is, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` (with
    ``/v1/traces`` appended for http/protobuf, as the specification says), else the default."""
    if yaml:
        return yaml
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces.strip()
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if base:
        base = base.strip()
        return base.rstrip("/") + "/v1/traces" if protocol == HTTP else base
    return DEFAULT_ENDPOINTS.get(protocol, DEFAULT_ENDPOINTS[HTTP])


def _env_headers(env: Mapping[str, str]) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS`` then ``..._TRACES_HEADERS`` (its names win): ``k=v,k2=v2``,
    values percent-decoded (the W3C Baggage format the specification names)."""
    out: dict[str, str] = {}
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for item in env.get(name, "").split(","):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                out[key.strip().lower()] = unquote(value.strip())
    return out


def _timeout(yaml: float | None, env: Mapping[str, str]) -> float:
    """Seconds: the YAML's, else ``..._TRACES_TIMEOUT`` / ``OTEL_EXPORTER_OTLP_TIMEOUT`` (milliseconds)."""
    if yaml is not None:
        return yaml
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        value = env.get(name)
        if value:
            try:
                return float(value) / 1000
            except ValueError:
                continue
    return 10.0


def _public_url(url: str) -> str:
    u = urlsplit(url)
    if not u.scheme or not u.hostname:
        return url.rpartition("@")[2].partition("?")[0]
    netloc = u.hostname + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, "", ""))


def public(settings: TelemetrySettings, resolved: Resolved) -> dict[str, Any]:
    """The section as /admin/config shows it: what is in effect, secrets masked."""
    out: dict[str, Any] = {"enabled": resolved.export is not None, "sampling_ratio": resolved.sampling_ratio,
                           "record_content": resolved.record_content}
    if resolved.export is not None:
        out.update(resolved.export.public())
    else:
        out["off_because"] = resolved.off_because
    return out


def telemetry_references(loaded: LoadedConfig, handlers: Collection[str]) -> list[ConfigError]:
    """``enabled: true`` needs the OpenTelemetry SDK (the ``otel`` extra), and ``protocol: grpc`` its
    gRPC exporter: said at the key, before the gateway serves without the traces it was asked for."""
    section = loaded.data.get("telemetry")
    if not isinstance(section, dict) or section.get("enabled") is not True:
        return []
    missing = missing_packages(section.get("exporter"), (section.get("otlp") or {}).get("protocol"))
    if missing:
        return [loaded.locate(("telemetry", "enabled"), missing)]
    return []


def missing_packages(exporter: str | None, protocol: str | None) -> str | None:
    """What is not installed for this exporter and protocol (None: all of it is), with the fix."""
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        return f"telemetry needs the OpenTelemetry SDK, which is not installed: {EXTRA}"
    if exporter in (None, "otlp") and protocol is not None:
        module = EXPORTER_MODULES.get(protocol)
        if module is not None and _missing(module):
            return f"telemetry.otlp.protocol {protocol} needs {module.replace('.', '-')}: {EXTRA}"
    return None


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # a parent package is missing
        return True
