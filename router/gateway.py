"""The running gateway's long-lived parts: the current snapshot, state store, HTTP session, reloads.

A reload loads and compiles a whole new snapshot off the event loop and swaps it in only when it is
fully good; a bad edit keeps the previous snapshot serving and is remembered as ``last_error``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from router.access_log import AccessLog
from router.accounts import StateStore
from router.budgets import BudgetCell, Budgets
from router.circuit import account_view, provider_views
from router.codecs import Stores
from router.config import LoadedConfig, load_dir
from router.errors import ConfigError, ConfigErrors
from router.limits import Limiter
from router.registry import template_filters
from router.render_pool import RenderPool
from router.sections import swap_in
from router.snapshot import BUILTIN_SIMULATOR, SECTIONS, Snapshot, compile_config
from router.state_settings import StateSettings
from router.summary import Line, describe
from router.telemetry import Telemetry
from router.tokens import Tokens
from router.usage import UsageLedger

if TYPE_CHECKING:
    from router.budgets_shared import BudgetSync
    from router.shared_state import SharedState
    from router.worker_dir import WorkerDir

log = logging.getLogger("router.gateway")

RELOAD_HISTORY = 20  # reloads the status page lists
RENDER_THREADS = 2  # concurrent Jinja renders; more wait their turn (each is bounded by its budget). Few:
# a CPU-bound render competes with the event loop for the GIL, so each one more slows every request


@dataclass
class ReloadStatus:
    ok: bool
    generation: int
    errors: list[ConfigError]
    at: float
    reason: str
    fixed_by: ReloadStatus | None = None  # a rejected reload's: the first good reload after it

    def as_dict(self) -> dict[str, Any]:
        fixed = self.fixed_by
        return {"ok": self.ok, "generation": self.generation, "at": self.at, "reason": self.reason,
                "errors": [e.as_dict() for e in self.errors],
                **({"fixed_by": {"generation": fixed.generation, "at": fixed.at}} if fixed is not None else {})}


def _uses_simulator(loaded: LoadedConfig) -> bool:
    providers = loaded.data.get("providers")
    if not isinstance(providers, dict):
        return False
    return any(isinstance(p, dict) and str(p.get("base_url", "")).rstrip("/") == BUILTIN_SIMULATOR
               for p in providers.values())


class Gateway:
    """One per process: owns the snapshot, the state that outlives it and the upstream session."""

    def __init__(self, config_dir: str | Path, env: Mapping[str, str] | None = None,
                 sim_options: dict[str, Any] | None = None, bind_host: str | None = None,
                 manage_logging: bool = False, require_keys: bool = False, announce: bool = True,
                 worker: int | None = None, worker_dir: WorkerDir | None = None):
        self.config_dir = Path(config_dir)
        # log what is served (per provider live/SIMULATED, auth) at start-up and when a reload changes
        # it; a --workers child other than the first logs it at debug only (the others say the same)
        self.announce = announce
        self.worker = worker  # a --workers child's index (None: the only process); admin views name it
        self.worker_dir = worker_dir  # a --workers child's share of metrics and reload status with the others
        self._summary: list[Line] = []
        self.manage_logging = manage_logging  # the CLI owns process logging: re-apply logging.level
        self.bind_host = bind_host  # the listener's address when given on the command line
        self.require_keys = require_keys  # --require-keys: a provider without a key is a config error
        self.env = env
        self.sim_options = sim_options or {}
        self.filters = template_filters()
        self.store = StateStore()
        self.tokens = Tokens(self.store)  # token accounts' access tokens (router.tokens): kept across reloads
        self.snapshot: Snapshot | None = None
        self.generation = 0
        self.last_reload: ReloadStatus | None = None
        self.last_error: ReloadStatus | None = None
        self.reload_history: deque[ReloadStatus] = deque(maxlen=RELOAD_HISTORY)  # the status page's list
        self.session: aiohttp.ClientSession | None = None
        self.renders: ThreadPoolExecutor | None = None  # templates with Jinja leaves render here
        self.sim: Any = None
        self.builtins: dict[str, str] = {}
        self.stores = Stores()  # what client codecs keep between requests, sized by each snapshot
        self.shared: SharedState | None = None  # state.backend: redis (router.shared_state)
        self.limiter = Limiter()  # client keys' and teams' limits (router.limits): kept across reloads
        self.budgets = Budgets()  # their budgets' spend this period (router.budgets): kept across reloads
        self.budget_sync: BudgetSync | None = None  # the budgets' side of the shared state
        self.usage = UsageLedger()  # usage per day, key, team and model (router.usage): kept across reloads
        self._closing: set[asyncio.Task[None]] = set()  # shared states replaced by a reload, closing
        self._lock = asyncio.Lock()
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.access_log = AccessLog(worker=worker)  # a --workers child's lines carry its index
        self.telemetry = Telemetry(env)  # tracing: follows each snapshot's telemetry section

    @property
    def current(self) -> Snapshot:
        assert self.snapshot is not None, "gateway not started"
        return self.snapshot

    async def start(self) -> None:
        """Load the first snapshot (raises ConfigErrors when invalid) and open the upstream session."""
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300,
                                             enable_cleanup_closed=True)
            # render_request always sends a User-Agent (router/<version> unless a template sets a
            # non-empty one), so aiohttp never adds its own
            self.session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        if self.renders is None:
            self.renders = RenderPool(RENDER_THREADS)  # shutting it down stops the renders running
        ok = await self.reload("startup")
        if not ok:
            assert self.last_error is not None
            raise ConfigErrors(self.last_error.errors)

    async def close(self) -> None:
        await self.tokens.close()  # refreshes still running: they use the session closing below
        await self.usage.close()  # its last rows to the shared state, before that closes
        await asyncio.to_thread(self.telemetry.close)  # the spans still batched are exported (bounded)
        self.use_state(None)
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self.renders is not None:  # a render still running ends at its budget's next check
            self.renders.shutdown(wait=False, cancel_futures=True)
            self.renders = None
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.sim is not None:
            await self.sim.__aexit__(None, None, None)
            self.sim = None

    async def reload(self, reason: str = "manual") -> bool:
        """Build and swap a new snapshot; on any problem keep the old one and record the errors."""
        async with self._lock:
            t0 = time.perf_counter()
            loaded = await asyncio.to_thread(load_dir, self.config_dir, self.env)
            if loaded.ignored:
                log.warning("not read as config (hidden, backup, or in a subdirectory): %s",
                            ", ".join(loaded.ignored[:10]))
            if _uses_simulator(loaded) and BUILTIN_SIMULATOR not in self.builtins:
                await self._start_simulator()
            generation = self.generation + 1
            try:
                snap = await asyncio.to_thread(compile_config, loaded, generation, self.filters, self.builtins,
                                               self.bind_host, self.require_keys)
            except ConfigErrors as e:
                self.reloads_failed += 1
                self.last_error = self.last_reload = ReloadStatus(False, self.generation, e.errors, time.time(), reason)
                self.reload_history.append(self.last_reload)
                for err in e.errors:
                    log.error("config rejected: %s", err, extra={"reason": reason})
                if self.snapshot is not None:
                    log.warning("keeping config generation %d after %d error(s)", self.generation, len(e.errors))
                return False
            self.snapshot = snap
            self.generation = generation
            swap_in(SECTIONS, self, snap)  # stores resized, logging re-applied: see snapshot.SECTIONS
            self.limiter.keep(snap.auth.cell_ids())  # removed keys' and teams' counters go, unchanged ones stay
            self.tokens.keep(a for p in snap.providers.values() for a in p.pool.accounts)  # changed credentials
            if self.shared is not None:
                await self.shared.ready()  # a new shared state: its first sync (bounded)
            if self.budget_sync is not None:
                await self.budget_sync.refresh()  # budgets added by this reload: their spend read at once
            self.reloads_ok += 1
            self.last_reload = ReloadStatus(True, generation, [], time.time(), reason)
            self.reload_history.append(self.last_reload)
            if self.last_error is not None and self.last_error.fixed_by is None:
                self.last_error.fixed_by = self.last_reload  # still shown, as fixed
            log.info("config generation %d loaded from %d file(s) in %.1f ms (%s)", generation,
                     len(snap.files), (time.perf_counter() - t0) * 1000, reason)
            self._log_summary(describe(snap, loaded, self.bind_host))
            return True

    def use_state(self, settings: StateSettings | None) -> None:
        """Open, replace or close the shared state for a snapshot's ``state:`` (None: closing down).
        Unchanged settings keep the connection; a change closes the old one in the background."""
        old = self.shared
        if old is not None and settings == old.settings:
            return
        self.shared = self.stores.remote = self.limiter.shared = self.tokens.shared = None
        old_budgets, self.budget_sync = self.budget_sync, None
        self.budgets.sharing = self.budgets.refuse_down = False  # in process, unless a new sync shares them
        if settings is not None and settings.shared:
            from router.budgets_shared import BudgetSync
            from router.shared_state import SharedState  # redis-py: only with backend redis (an extra)
            from router.tokens_redis import shared_tokens

            self.shared = SharedState(settings, self.store, self._pools)
            self.shared.start(previous=old)  # what the old one had still to write goes to the new one
            self.stores.remote, self.limiter.shared = self.shared, self.shared.limits
            self.tokens.shared = shared_tokens(self.shared)  # one refresh across gateways, tokens shared
            self.budget_sync = BudgetSync(self.budgets, self.shared, self._budget_cells)
            self.budget_sync.start()
            log.info("state: redis at %s (prefix %s), pools synced every %gs", settings.public()["address"],
                     settings.prefix, settings.sync_interval)
        if self.shared is None and self.worker_dir is not None:  # --workers, memory state: their directory
            from router.tokens_files import worker_tokens

            self.tokens.shared = worker_tokens(self.worker_dir.path)
        self.usage.share(self.shared)  # its rows follow the shared state (None: kept in this process)
        if old is not None:  # requests awaiting its writes keep them; it closes when they are done
            task = asyncio.get_running_loop().create_task(self._close_state(old, old_budgets))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_state(old: SharedState, budgets: BudgetSync | None) -> None:
        """A replaced shared state: its budgets' charges sent (bounded), then its own writes and connection."""
        if budgets is not None:
            await budgets.close()
        await old.close()

    def _budget_cells(self) -> tuple[BudgetCell, ...]:
        return () if self.snapshot is None else self.snapshot.auth.budget_cells

    def _pools(self) -> list[list[str]]:
        """Each provider's account keys in the snapshot serving now (what the shared state syncs)."""
        snap = self.snapshot
        return [] if snap is None else [[a.state_key for a in p.pool.accounts] for p in snap.providers.values()]

    @property
    def served(self) -> list[Line]:
        """The served-config summary (per provider live or SIMULATED, the auth mode): the status page's."""
        return self._summary

    def _log_summary(self, lines: list[Line]) -> None:
        """The served-config summary, at start-up and whenever a reload changes it."""
        if lines == self._summary:
            return
        self._summary = lines
        for line in lines:
            log.log(line.level if self.announce else logging.DEBUG, line.message, extra=line.fields)

    async def _start_simulator(self) -> None:
        from router.sim import SimServer

        self.sim = SimServer(port=0, **self.sim_options)
        await self.sim.__aenter__()
        self.builtins[BUILTIN_SIMULATOR] = self.sim.url
        log.info("bundled upstream simulator serving at %s", self.sim.url)

    def accounts_status(self) -> list[dict[str, Any]]:
        """Per account: state, cooling until (wall clock), recent failures, requests, weight, attempts
        in flight and the recent error rate. Never the key."""
        snap = self.current
        now_mono, now_wall = self.store.clock(), time.time()

        def wall(t: float) -> float:
            return round(now_wall + (t - now_mono), 3)

        out = []
        for p in snap.providers.values():
            for acc in p.pool.accounts:
                st = self.store.state(acc.state_key)
                models = {m: wall(t) for m, t in st.model_cooling.items() if t > now_mono}
                cooling = st.cooling_until > now_mono
                out.append({
                    **acc.public(), "key": acc.state_key,
                    "state": "disabled" if st.disabled else "ejected" if st.ejected_until > now_mono
                    else "cooling" if cooling else ("cooling_some_models" if models else "ok"),
                    **({"credential": acc.credential_kind} if acc.credential_kind else {}),
                    **({"disabled": st.disabled} if st.disabled else {}),  # the refusal's error code, no secret
                    "circuit": account_view(self.store, acc.state_key, now_wall, now_mono),
                    "cooling_until": wall(st.cooling_until) if cooling else None,
                    "cooling_models": models,
                    "recent_failures": [{"at": round(at, 3), "reason": why} for at, why in st.failures],
                    "requests": st.requests,
                    "weight": acc.weight, "in_flight": st.in_flight,  # in flight: in this process
                    "error_rate": round(st.error_rate(now_mono), 3),
                    **self._totals(acc.state_key),
                })
        return out

    def provider_circuits(self) -> dict[str, dict[str, Any]]:
        """Each provider's circuit (state, open until on the wall clock, ejections in a row)."""
        return provider_views(self.store, self.current.providers, time.time(), self.store.clock())

    def _totals(self, key: str) -> dict[str, Any]:
        """With a shared state: the account's requests and failures through every gateway (as of the
        last sync, forgotten after a day without one)."""
        if self.shared is None:
            return {}
        requests, failures = self.shared.totals.get(key, (0, 0))
        return {"all_gateways": {"requests": requests, "failures": failures, "synced_at": self.shared.synced_at}}

    def reset_accounts(self, wanted: str) -> list[str]:
        """Clear cooldowns of the accounts matching an id, an email or ``provider/id``."""
        done = []
        for p in self.current.providers.values():
            for acc in p.pool.accounts:
                if wanted in (acc.id, acc.email, acc.state_key):
                    self.store.reset(acc.state_key)
                    done.append(acc.state_key)
        return done

    def answered_by(self) -> dict[str, int]:
        """``{"worker": N}`` in a --workers child's admin answers (each worker answers for itself)."""
        return {} if self.worker is None else {"worker": self.worker}

    def config_status(self) -> dict[str, Any]:
        """What /admin/config shows: no secret, only names, hashes and errors."""
        snap = self.current
        return {
            **self.answered_by(),
            "generation": snap.generation,
            "loaded_at": snap.loaded_at,
            "config_dir": str(self.config_dir),
            "files": [{"name": n, "sha256": h} for n, h in snap.files],
            "last_reload": self.last_reload.as_dict() if self.last_reload else None,
            "last_error": self.last_error.as_dict() if self.last_error else None,
            "reloads": {"ok": self.reloads_ok, "failed": self.reloads_failed},
            "state": self.shared.public() if self.shared is not None else snap.state.public(),
            "auth": snap.auth.public(),
            "prices": snap.prices.public(),
            "telemetry": self.telemetry.public(),  # the OTLP headers masked
            "routes": snap.routes.describe(),
            "providers": {n: {**p.public(), "accounts": [a.public() for a in p.pool.accounts],
                              "fallback": snap.fallbacks.get(n)} for n, p in snap.providers.items()},
        }
