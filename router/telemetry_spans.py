"""The OpenTelemetry SDK side of tracing (imported only when tracing is on: the ``otel`` extra).

A :class:`Pipeline` is an exporter behind the SDK's batch processor (the export runs in the
processor's thread). ``emit`` turns one finished request into its finished spans: the SERVER span and
one CLIENT span per upstream attempt, with the ids the request already used (the client's parent
span, the ``traceparent`` each attempt sent upstream) and the times it recorded.

The spans are made as the SDK's ``ReadableSpan`` (what span processors and exporters take), not
through a Tracer: a span started and ended after the fact needs none of a live span's machinery
(sampler, locks, attribute checks, an id generator), and skipping it costs ~7 us a span instead of
~80 (measured with this SDK, 20 attributes). The attributes are built here already in the types the
exporters expect (str, bool, int, float, tuples of str).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from router import __version__
from router.redact import loggable_url, redact
from router.telemetry_content import content_attributes
from router.telemetry_settings import GRPC, Export

if TYPE_CHECKING:
    from router.exchange import Exchange
    from router.snapshot import Provider
    from router.telemetry import AttemptTrace, Trace

# gen_ai.operation.name by client codec (the conventions' well-known values)
OPERATIONS = {"openai.chat": "chat", "anthropic.messages": "chat", "openai.responses": "chat", "ollama.chat": "chat",
              "openai.completions": "text_completion", "ollama.generate": "text_completion",
              "gemini": "generate_content"}
# gen_ai.provider.name by upstream codec (a provider's dialect), unless the provider names its own
# (``telemetry_name:``, e.g. azure.ai.openai, gcp.vertex_ai); the provider's config name is router.provider
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "bedrock": "aws.bedrock"}
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
OK, ERROR = Status(StatusCode.UNSET), Status(StatusCode.ERROR)
MAX_UPSTREAMS = 1024


def _exporter(export: Export) -> SpanExporter:
    if export.exporter == "console":
        return ConsoleSpanExporter(out=sys.stdout)  # today's stdout (its default is the one at its import)
    headers = dict(export.headers)
    if export.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=export.endpoint, headers=headers, timeout=export.timeout,
                            insecure=export.endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=export.endpoint, headers=headers, timeout=export.timeout)


class Pipeline:
    """``export``'s exporter behind a batch processor (or ``override``, handed each span at once)."""

    def __init__(self, export: Export, override: SpanExporter | None = None) -> None:
        self.export, self.override = export, override
        self.resource = Resource.create({"service.name": export.service_name, "service.version": __version__})
        self.scope = InstrumentationScope("router", __version__)
        self.upstreams: dict[tuple[str, str, str], dict[str, Any]] = {}  # by provider: upstream_attributes
        self.processor = SimpleSpanProcessor(override) if override is not None \
            else BatchSpanProcessor(_exporter(export))

    def close(self) -> None:
        self.processor.shutdown()

    def _upstream(self, provider: Provider | None) -> dict[str, Any]:
        if provider is None:
            return {}
        key = (provider.name, provider.dialect, provider.base_url)
        found = self.upstreams.get(key)
        if found is None:
            if len(self.upstreams) >= MAX_UPSTREAMS:  # reloads may bring new providers: stay bounded
                self.upstreams.clear()
            found = self.upstreams[key] = upstream_attributes(provider)
        return found

    def emit(self, x: Exchange, trace: Trace, request: web.BaseRequest, route: str, status: int,
             latency: float) -> None:
        """The request's SERVER span and each attempt's CLIENT span under it, finished."""
        operation = OPERATIONS.get(x.codec.name, "chat") if x.codec is not None else None
        end = trace.wall(x.started + latency)
        # the client's tracestate is the trace's: on the parent, on our spans, and sent upstream (W3C)
        state = TraceState.from_header([trace.tracestate]) if trace.tracestate else None
        server = SpanContext(trace.trace_id, trace.span_id, False, SAMPLED, state)
        for a in trace.attempts:
            self._client_span(x, trace, a, operation, server, end)
        parent = None
        if trace.parent_id:
            parent = SpanContext(trace.trace_id, trace.parent_id, True, SAMPLED, state)
        name = f"{operation} {x.client_model}" if operation and x.client_model else f"{request.method} {route}"
        self.processor.on_end(ReadableSpan(
            name, server, parent, self.resource, _server_attributes(x, trace, operation, request, route, status),
            kind=SpanKind.SERVER, status=ERROR if status >= 500 else OK, start_time=trace.wall(x.started),
            end_time=end, instrumentation_scope=self.scope))

    def _client_span(self, x: Exchange, trace: Trace, a: AttemptTrace, operation: str | None, parent: SpanContext,
                     request_end: int) -> None:
        done = x.attempts[a.index] if a.index < len(x.attempts) else None
        outcome: int | str = done.outcome if done is not None else ("client_closed" if x.status == 499 else "aborted")
        end = trace.wall(a.started + done.latency) if done is not None else request_end
        failed = not (isinstance(outcome, int) and outcome < 400)
        self.processor.on_end(ReadableSpan(
            f"{operation or 'chat'} {a.model}", SpanContext(trace.trace_id, a.span_id, False, SAMPLED,
                                                            parent.trace_state), parent,
            self.resource, _client_attributes(x, trace, a, operation, outcome, self._upstream(a.provider)),
            kind=SpanKind.CLIENT,
            status=ERROR if failed else OK, start_time=trace.wall(a.started), end_time=min(end, request_end),
            instrumentation_scope=self.scope))


def _server_attributes(x: Exchange, trace: Trace, operation: str | None, request: web.BaseRequest, route: str,
                       status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"http.request.method": request.method, "http.route": route, "url.path": request.path,
                           "http.response.status_code": status, "router.request_id": x.request_id,
                           "router.route": route, "router.handler": x.handler}
    if request.remote:
        out["client.address"] = request.remote
    key = x.key
    if key is not None:
        out["router.key"] = key.name  # the key's name from the config, never the key
        if key.team:
            out["router.team"] = key.team
    if x.attempts:
        out["router.attempts"] = len(x.attempts)
        out["router.outcome"] = str(x.attempts[-1].outcome)
    if x.chain:
        out["router.fallback.chain"] = tuple(x.chain)
    if status >= 400:
        out["error.type"] = _error_type(x, status)
    if operation is not None:
        out.update(_genai(x, trace, operation))
        if trace.record_content:
            out.update(content_attributes(x.canonical, trace.events))
    return out


def _genai(x: Exchange, trace: Trace, operation: str) -> dict[str, Any]:
    """The GenAI attributes of the request as a whole (its answering provider and model, its usage)."""
    out: dict[str, Any] = {"gen_ai.operation.name": operation}
    provider, req, usage = x.provider, x.canonical, x.usage
    if x.client_model:
        out["gen_ai.request.model"] = x.client_model
    if provider is not None:
        out["gen_ai.provider.name"] = provider_name(provider)
        out["router.provider"] = provider.name
    if x.account is not None:
        out["router.account"] = x.account.email
    if x.upstream_model and x.ttfb is not None:  # an upstream answered: the model its answer names, if it did
        out["gen_ai.response.model"] = usage.model if usage is not None and usage.model else x.upstream_model
    if req is not None:
        out.update(_request_parameters(req))
    if usage is not None:
        out["gen_ai.usage.input_tokens"] = usage.input_tokens
        out["gen_ai.usage.output_tokens"] = usage.output_tokens
    if trace.finish_reasons:
        out["gen_ai.response.finish_reasons"] = tuple(trace.finish_reasons)
    return out


def _request_parameters(req: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"router.stream": bool(req.stream)}
    for name, value in (("max_tokens", req.max_tokens), ("temperature", req.temperature), ("top_p", req.top_p),
                        ("top_k", req.top_k), ("seed", req.seed)):
        if value is not None:
            out[f"gen_ai.request.{name}"] = value
    if req.stop:
        out["gen_ai.request.stop_sequences"] = tuple(req.stop)
    if req.n is not None and req.n != 1:
        out["gen_ai.request.choice.count"] = req.n
    return out


def provider_name(provider: Provider) -> str:
    """Its ``gen_ai.provider.name``: the provider's ``telemetry_name``, else its dialect's."""
    return provider.telemetry_name or PROVIDERS.get(provider.dialect, provider.dialect)


def upstream_attributes(provider: Provider) -> dict[str, Any]:
    """What every attempt at a provider shares: its names and its server (parsed once per provider)."""
    out: dict[str, Any] = {"gen_ai.provider.name": provider_name(provider), "router.provider": provider.name}
    u = urlsplit(provider.base_url)
    if u.hostname:
        out["server.address"] = u.hostname
        out["server.port"] = u.port or (443 if u.scheme == "https" else 80)
    return out


def _url(a: AttemptTrace) -> str:
    """The attempt's URL as logs show it: no user info, no query, the account's key blanked."""
    provider, secrets = a.provider, (a.account.api_key,) if a.account is not None else ()
    if provider is None or not a.url.startswith(provider.base_url):
        return loggable_url(a.url, secrets)
    return redact(provider.public()["base_url"] + a.url[len(provider.base_url):].partition("?")[0], secrets)


def _client_attributes(x: Exchange, trace: Trace, a: AttemptTrace, operation: str | None, outcome: int | str,
                       upstream: dict[str, Any]) -> dict[str, Any]:
    account = a.account
    out: dict[str, Any] = {**upstream, "gen_ai.operation.name": operation or "chat", "gen_ai.request.model": a.model,
                           "router.account": account.email if account else "", "router.attempt": a.number,
                           "router.outcome": str(outcome), "url.full": _url(a)}
    if isinstance(outcome, int):
        out["http.response.status_code"] = outcome
    if not (isinstance(outcome, int) and outcome < 400):
        out["error.type"] = str(outcome)
    elif a is trace.attempts[-1]:  # the attempt that answered: the answer's model, usage and finish
        out.update({k: v for k, v in _genai(x, trace, operation or "chat").items()
                    if k.startswith(("gen_ai.response.", "gen_ai.usage."))})
    return out


def _error_type(x: Exchange, status: int) -> str:
    """A low-cardinality class: the last attempt's failure (``rate_limit``, ``timeout``, ``429``...),
    else the response's status code."""
    failed = [a.outcome for a in x.attempts if not (isinstance(a.outcome, int) and a.outcome < 400)]
    return str(failed[-1]) if failed else str(status)
