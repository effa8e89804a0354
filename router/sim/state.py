"""The simulator's per-app state: default options, the fault book and the request log."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from router.sim.faults import FaultBook

OPTION_HEADERS = {"latency": "x-sim-latency", "chunks": "x-sim-chunks", "chunk_delay": "x-sim-chunk-delay"}


@dataclass(frozen=True, slots=True)
class SimOptions:
    """Timing and shape knobs; app defaults, overridable per request by ``x-sim-*`` headers."""

    latency: float = 0.0
    chunks: int = 3
    chunk_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.latency < 0 or self.chunk_delay < 0:
            raise ValueError("latency and chunk_delay must be >= 0")
        if self.chunks < 1:
            raise ValueError("chunks must be >= 1")

    def with_headers(self, headers: Any) -> SimOptions:
        """Apply ``x-sim-*`` overrides; raises ``ValueError`` on a malformed value."""
        changes: dict[str, Any] = {}  # field name -> its value (chunks is an int, the rest are floats)
        for name, header in OPTION_HEADERS.items():
            raw = headers.get(header)
            if raw is None:
                continue
            try:
                changes[name] = int(raw) if name == "chunks" else float(raw)
            except ValueError:
                raise ValueError(f"header {header}: not a number: {raw!r}") from None
        return replace(self, **changes) if changes else self


@dataclass(slots=True)
class LogEntry:
    """One received request; ``status`` is filled in once the answer is decided."""

    key: str | None
    path: str
    model: str | None
    stream: bool
    body: Any
    dialect: str
    status: int | None = None
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "path": self.path, "model": self.model, "stream": self.stream,
                "status": self.status, "body": self.body, "dialect": self.dialect,
                "fault": self.fault}


LOG_MAX = 10_000
SIM_PREFIX = "sim-"  # credentials the cloud paths accept without being told: the shipped simulator accounts'


@dataclass(slots=True)
class Credentials:
    """What the cloud paths (Vertex AI, Azure OpenAI) accept, as the real services check it: bearer
    tokens (a token server's, added by whoever issues them) and Azure api-keys; besides these, any
    credential starting with ``sim-``. The other paths take any key, as before."""

    tokens: set[str] = field(default_factory=set)
    api_keys: set[str] = field(default_factory=set)

    def token_ok(self, token: str) -> bool:
        return token in self.tokens or token.startswith(SIM_PREFIX)

    def api_key_ok(self, key: str) -> bool:
        return key in self.api_keys or key.startswith(SIM_PREFIX)


@dataclass(slots=True)
class SimState:
    """Everything mutable in one simulator app."""

    options: SimOptions
    faults: FaultBook = field(default_factory=FaultBook)
    credentials: Credentials = field(default_factory=Credentials)  # kept by reset(): configuration, not history
    # bounded: the simulator may serve a long-running gateway in-process
    log: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=LOG_MAX))

    def record(self, entry: LogEntry) -> LogEntry:
        self.log.append(entry)
        return entry

    def requests(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in self.log]

    def reset(self) -> None:
        """Forget every queued fault and every logged request."""
        self.faults.clear()
        self.log.clear()


STATE: web.AppKey[SimState] = web.AppKey("sim_state", SimState)
