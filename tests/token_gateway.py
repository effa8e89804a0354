"""A gateway whose provider's accounts authenticate with OAuth2 credentials, against the simulator's
fake token server (router.sim.oauth): the helpers the token tests share."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from router.sim import SimServer
from tests.conftest import FAST_RETRY, ROUTES, Harness, start_gateway

CHAT = {"model": "tok-model", "messages": [{"role": "user", "content": "hi"}]}
CLIENT_SECRET = "cs-secret-9f8e7d"  # must never show up anywhere but the token request


def refresh_account(email: str, refresh_token: str, sim: SimServer, **extra: str) -> dict[str, Any]:
    return {"email": email, "credential": {"type": "oauth2_refresh_token", "token_url": f"{sim.url}/oauth2/token",
                                           "client_id": "cid-1", "client_secret": CLIENT_SECRET,
                                           "refresh_token": refresh_token, **extra}}


def write_config(config: Path, sim: SimServer, accounts: list[dict[str, Any]], state: str = "",
                 mapping: str = "model_mapping: {default: gtok/gemini-2.5-flash}\n") -> Path:
    """A config dir: the shipped server, routes and templates, and one provider ``gtok`` (Gemini
    dialect, the shipped template) whose accounts are ``accounts``, serving every model (``mapping``), and
    ``gkey`` with one static key."""
    import orjson

    config.mkdir(parents=True, exist_ok=True)
    for name in ("00-server.yaml", "30-routes.yaml", "50-templates.yaml", "60-headers.yaml"):
        shutil.copy(ROUTES / name, config / name)
    provider = {"gtok": {"dialect": "gemini", "base_url": sim.url, "template": "gemini",
                         "scheduling": "round_robin", "accounts": accounts},
                "gkey": {"dialect": "gemini", "base_url": sim.url, "template": "gemini",
                         "accounts": [{"email": "keyed@x", "api_key": "k-fallback"}]}}
    (config / "10-providers.yaml").write_text(orjson.dumps({"providers": provider}).decode())  # JSON is YAML
    (config / "20-mapping.yaml").write_text(mapping)
    (config / "40-retry.yaml").write_text(FAST_RETRY)
    if state:
        (config / "05-state.yaml").write_text(state)
    return config


async def gateway(config: Path, sim: SimServer, accounts: list[dict[str, Any]], state: str = "") -> Harness:
    return await start_gateway(write_config(config, sim, accounts, state))


def tokens_used(sim: SimServer) -> list[str | None]:
    """The key or bearer token of each request the simulator's Gemini paths got, in order."""
    return [r["key"] for r in sim.requests() if r["path"].startswith("/v1beta/")]


def age(h: Harness, seconds: float) -> None:
    """Every token this gateway holds is ``seconds`` older (its refresh and expiry times come sooner)."""
    for cell in h.gateway.tokens.cells.values():
        cell.refresh_at -= seconds
        cell.usable_until -= seconds
