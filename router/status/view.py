"""What ``GET /admin/status`` answers: the page's whole view, as JSON, never a secret.

Config generation, reload history and the last error (file:line:column); the address the request came
in on and the auth mode; each provider live or SIMULATED (the start-up summary's words) with its
circuit; the accounts with their cooldowns and circuits; traffic and recent failed requests.

Traffic and failed requests: with ``state: redis`` (up) every process's of the fleet
(``router.status.replicas``); else under ``--workers`` every worker's (each writes its
``Traffic.export`` to ``traffic-<i>.json`` in the shared worker directory, the way metrics are shared);
else this process's. The workers' reload results are listed; accounts, circuits and reload history
are the answering process's (with ``state: redis`` the cooldowns and circuits are shared by every
worker and replica).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.status.summary import summarize
from router.worker_dir import read_json, write_json
from router.worker_reload import workers_view

if TYPE_CHECKING:
    from router.gateway import Gateway
    from router.status.traffic import Traffic
    from router.worker_dir import WorkerDir

# what an account row shows: named fields only, so a field added to /admin/accounts later (a token's
# expiry, a credential's kind) reaches the page only when it is listed here
ACCOUNT_FIELDS = ("provider", "id", "email", "key", "state", "disabled", "cooling_until", "cooling_models",
                  "circuit", "requests", "in_flight", "error_rate", "all_gateways")
FAILED_SHOWN = 30


def traffic_file(wd: WorkerDir, worker: int) -> Path:
    return wd.path / f"traffic-{worker}.json"


def publish(wd: WorkerDir, traffic: Traffic) -> dict[str, Any]:
    """A --workers child's traffic, for the other workers' status answers (off the request path)."""
    own = traffic.export()
    write_json(traffic_file(wd, wd.worker), own)
    return own


def local_exports(gw: Gateway, traffic: Traffic) -> list[dict[str, Any]]:
    """This process's traffic, and under --workers the other workers' latest."""
    wd = gw.worker_dir
    if wd is None:
        return [traffic.export()]
    own = publish(wd, traffic)
    others = (read_json(p) for p in sorted(wd.path.glob("traffic-*.json")) if p != traffic_file(wd, wd.worker))
    return [own, *(o for o in others if isinstance(o, dict))]


def _config(gw: Gateway) -> dict[str, Any]:
    snap = gw.current
    return {"generation": snap.generation, "loaded_at": snap.loaded_at, "config_dir": str(gw.config_dir),
            "files": [name for name, _ in snap.files], "reloads": {"ok": gw.reloads_ok, "failed": gw.reloads_failed},
            "history": [r.as_dict() for r in reversed(gw.reload_history)],
            "last_error": gw.last_error.as_dict() if gw.last_error else None, **workers_view(gw)}


def _providers(gw: Gateway) -> list[dict[str, Any]]:
    circuits = gw.provider_circuits()
    lines = {line.fields.get("provider"): line for line in gw.served}
    out = []
    for name, p in gw.current.providers.items():
        line = lines.get(name)
        fields = line.fields if line is not None else {}
        out.append({"name": name, "dialect": p.public().get("dialect"), "state": fields.get("state", "live"),
                    "via": fields.get("via"), "summary": line.message if line is not None else "",
                    "accounts": len(p.pool.accounts),
                    "circuit": circuits.get(name) if p.pool.circuit is not None else None})  # None: off
    return out


def _accounts(gw: Gateway) -> list[dict[str, Any]]:
    """The account rows; ``circuit`` is None (off) where the provider has no circuit breaking, as for
    providers; an ejected account's ``ejected_until`` is when its ejection ends (its countdown)."""
    breaking = {name for name, p in gw.current.providers.items() if p.pool.circuit is not None}
    out = []
    for a in gw.accounts_status():
        row = {k: a[k] for k in ACCOUNT_FIELDS if k in a}
        if a.get("provider") not in breaking:
            row["circuit"] = None
        elif a.get("state") == "ejected":
            row["ejected_until"] = (a.get("circuit") or {}).get("until")
        out.append(row)
    return out


def _auth(gw: Gateway) -> dict[str, Any]:
    auth = gw.current.auth
    line = next((line for line in gw.served if "auth_mode" in line.fields), None)
    return {"mode": auth.mode, "summary": line.message if line is not None else "",
            "client_keys": len(auth.keys), "admin_keys": len(auth.admin_keys)}


def status_view(gw: Gateway, exports: list[dict[str, Any]], listen: str) -> dict[str, Any]:
    """``exports``: the traffic to show (``local_exports`` or ``replicas.shared_exports``)."""
    now = time.time()
    failed = sorted((f for e in exports for f in e.get("failed", ())), key=lambda f: -float(f.get("at", 0)))
    return {"at": round(now, 3), **gw.answered_by(), "listen": listen, "auth": _auth(gw), "config": _config(gw),
            "providers": _providers(gw),
            "accounts": _accounts(gw),
            "traffic": summarize(exports, now), "failed": failed[:FAILED_SHOWN]}
