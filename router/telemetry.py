"""OpenTelemetry tracing: a SERVER span per request and a CLIENT span per upstream attempt, with the
GenAI semantic conventions, built from the request's record once its response is on its way.

The request path does only what cannot wait: at arrival, the request's trace context (the client's
W3C ``traceparent`` continued, or a new trace) and the sampling decision; at each attempt, the
attempt's span id, sent upstream in its ``traceparent`` before the request goes out; while the
answer flows, its finish reasons (and, with ``record_content``, its events). The spans themselves
are made by the SDK after the response (``finish``, from the access log's observation point), with
the ids and times recorded, and exported in the background by a batch processor.

When tracing is off the request path pays one attribute test per request (``Telemetry.on``), and
the SDK is never imported: the gateway runs without the ``otel`` extra.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.canonical import Event, Finish, StreamError
from router.codecs import StreamEncoder
from router.telemetry_settings import Resolved, TelemetrySettings, missing_packages, public, resolve

if TYPE_CHECKING:
    from router.accounts import Account
    from router.exchange import Exchange
    from router.sections import Live
    from router.snapshot import Provider, Snapshot
    from router.telemetry_spans import Pipeline
    from router.upstream_request import UpstreamRequest

log = logging.getLogger("router.telemetry")

RATIO_BOUND = 1 << 64  # the W3C / OpenTelemetry TraceIdRatioBased rule: the trace id's low 64 bits


@dataclass(slots=True)
class AttemptTrace:
    """One upstream attempt as its CLIENT span will show it (its outcome comes from ``Exchange.attempts``)."""

    span_id: int
    started: float  # time.monotonic()
    index: int  # its place in Exchange.attempts, once it ended
    number: int  # the attempt number within its target (1-based)
    provider: Provider | None
    model: str
    account: Account | None  # its label is shown, its key blanked from the URL (at emit time, off the path)
    url: str  # as sent: the span shows it without query or user info


class Trace:
    """One request's trace context and what its spans need that the Exchange does not keep."""

    __slots__ = ("attempts", "events", "finish_reasons", "parent_id", "record_content", "sampled", "span_id",
                 "trace_id", "tracestate", "wall_offset")

    def __init__(self, trace_id: int, parent_id: int, sampled: bool, tracestate: str | None,
                 record_content: bool) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id  # the client's span (0: the trace starts here)
        self.span_id = random.getrandbits(64) or 1  # the SERVER span's
        self.sampled = sampled
        self.tracestate = tracestate
        self.record_content = record_content and sampled
        self.wall_offset = time.time_ns() - time.monotonic_ns()  # monotonic -> epoch nanoseconds
        self.attempts: list[AttemptTrace] = []
        self.finish_reasons: list[str] = []
        self.events: list[Event] | None = [] if self.record_content else None  # the answer's, for its content

    def attempt(self, x: Exchange, up: UpstreamRequest) -> None:
        """An attempt is about to be sent: its CLIENT span's id goes upstream as ``traceparent``."""
        span_id = random.getrandbits(64) or 1
        if self.sampled:  # an unsampled trace only passes its context on
            self.attempts.append(AttemptTrace(span_id, time.monotonic(), len(x.attempts), x.attempt, x.provider,
                                              x.upstream_model or "", x.account, up.url))
        up.headers["traceparent"] = f"00-{self.trace_id:032x}-{span_id:016x}-{'01' if self.sampled else '00'}"
        if self.tracestate:
            up.headers["tracestate"] = self.tracestate

    def answered(self, events: list[Event]) -> None:
        """A non-stream answer's events: its finish reasons (and its content when recorded)."""
        if not self.sampled:
            return
        self.finish_reasons = [e.reason for e in events if isinstance(e, Finish)]
        if self.events is not None:
            self.events = list(events)

    def watch(self, encoder: StreamEncoder) -> StreamEncoder:
        """A stream's encoder that notes the finish reasons (and the events) as they go through."""
        return WatchedEncoder(encoder, self) if self.sampled else encoder

    def wall(self, monotonic: float) -> int:
        """A ``time.monotonic()`` instant as epoch nanoseconds (what span times are)."""
        return int(monotonic * 1e9) + self.wall_offset


class WatchedEncoder:
    """A client codec's stream encoder, unchanged, that shows its trace the events it encodes."""

    __slots__ = ("inner", "trace")

    def __init__(self, inner: StreamEncoder, trace: Trace) -> None:
        self.inner, self.trace = inner, trace

    def start(self) -> bytes:
        return self.inner.start()

    def feed(self, event: Event) -> bytes:
        trace = self.trace
        if type(event) is Finish:
            trace.finish_reasons.append(event.reason)
        if trace.events is not None:
            trace.events.append(event)
        return self.inner.feed(event)

    def finish(self) -> bytes:
        return self.inner.finish()

    def error(self, err: StreamError) -> bytes:
        return self.inner.error(err)


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a W3C ``traceparent``; None when absent or invalid (the
    trace then starts here). A later version's header is read by its first four fields, as W3C says."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    if parts[0] == "ff" or (parts[0] == "00" and len(parts) != 4):
        return None
    try:
        version, trace_id, parent_id, flags = (int(p, 16) for p in parts[:4])
    except ValueError:
        return None
    del version
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, bool(flags & 1)


class Telemetry:
    """The gateway's tracing, kept across reloads: follows each snapshot's ``telemetry:``.

    ``on`` is what the request path tests. ``exporter`` (tests: the SDK's InMemorySpanExporter)
    replaces the configured exporter, with spans handed over as each request ends.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = env if env is not None else os.environ
        self.on = False
        self.exporter: Any = None
        self.settings: TelemetrySettings | None = None
        self.resolved = Resolved(None, 1.0, False, "not configured")
        self.pipeline: Pipeline | None = None
        self._bound = RATIO_BOUND  # traces whose low 64 bits are below it are sampled
        self._content = False

    # --- the request path ------------------------------------------------------------------------

    def begin(self, request: web.BaseRequest) -> Trace:
        """The request's trace: the client's continued (its sampling decision kept), else a new one
        sampled by ``sampling_ratio`` on its trace id."""
        headers = request.headers
        parent = parse_traceparent(headers.get("traceparent"))
        if parent is not None:
            state = ",".join(headers.getall("tracestate", ())) or None
            return Trace(parent[0], parent[1], parent[2], state, self._content)
        trace_id = random.getrandbits(128) or 1
        return Trace(trace_id, 0, (trace_id & (RATIO_BOUND - 1)) < self._bound, None, self._content)

    def finish(self, x: Exchange, request: web.BaseRequest, route: str, status: int, latency: float) -> None:
        """The request ended (its response is on its way): its spans, when it is sampled."""
        trace, pipeline = x.trace, self.pipeline
        if trace is None or not trace.sampled or pipeline is None:
            return
        pipeline.emit(x, trace, request, route, status, latency)

    # --- configuration ---------------------------------------------------------------------------

    def configure(self, settings: TelemetrySettings) -> None:
        """A snapshot went live: sampling and content follow it at once; a new exporter, endpoint,
        protocol, headers or service name gets a new pipeline (the old one flushes in the background)."""
        resolved = resolve(settings, self.env)
        self.settings, self.resolved = settings, resolved
        self._bound = int(max(0.0, min(1.0, resolved.sampling_ratio)) * RATIO_BOUND)
        self._content = resolved.record_content
        export = resolved.export
        old = self.pipeline
        if old is not None and export is not None and old.export == export and old.override is self.exporter:
            self.on = True
            return
        self.pipeline, self.on = None, False
        if old is not None:
            self._close_later(old)
        if export is None:
            if settings.enabled:
                log.info("telemetry: off (%s)", resolved.off_because)
            return
        missing = missing_packages(export.exporter, export.protocol)
        if missing is not None:  # the protocol came from the environment (the YAML's is checked at load)
            log.error("telemetry: off: %s", missing)
            return
        from router.telemetry_spans import Pipeline

        self.pipeline = Pipeline(export, self.exporter)
        self.on = True
        log.info("telemetry: traces to %s", _describe(export.public()) if self.exporter is None else "a test exporter")

    @staticmethod
    def _close_later(old: Pipeline) -> None:
        """A replaced pipeline flushes what it holds (bounded by its timeout) off the event loop."""
        try:
            asyncio.get_running_loop().run_in_executor(None, old.close)
        except RuntimeError:  # no running loop
            old.close()

    def public(self) -> dict[str, Any]:
        if self.settings is None:
            return {"enabled": False}
        return public(self.settings, self.resolved)

    def close(self) -> None:
        """Shutting down: what is batched is exported (bounded by the exporter's timeout)."""
        pipeline, self.pipeline, self.on = self.pipeline, None, False
        if pipeline is not None:
            pipeline.close()


def _describe(view: dict[str, Any]) -> str:
    if view["exporter"] != "otlp":
        return str(view["exporter"])
    return f"{view['endpoint']} (OTLP {view['protocol']}, service {view['service_name']})"


def configure_telemetry(live: Live, snap: Snapshot) -> None:
    """The ``telemetry:`` section's swap step: tracing follows the snapshot going live."""
    live.telemetry.configure(snap.telemetry)
