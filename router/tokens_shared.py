"""Access tokens shared through Redis (``state.backend: redis``): one refresh across processes.

Per token account, under one hash tag (Redis-Cluster-safe), each value tagged with the credential's
fingerprint (a process with another config for the account ignores it):

- ``{<prefix>:cred:<account key>}:access``: the current access token, its expiry and when to refresh
  it (JSON; the key expires with the token);
- ``{<prefix>:cred:<account key>}:refresh``: the latest rotated refresh token (RFC 6749 section 6), with
  no expiry: a restarted process uses it rather than the configured one the server already replaced;
- ``{<prefix>:cred:<account key>}:lock``: the process refreshing now (``SET NX PX``, released by
  compare-and-delete).

A refresh (:meth:`SharedTokens.obtain`, run by the cache's single flight): a shared token that is fresh
(and not the one the upstream just refused) is used as is; else the lock holder fetches and writes the
token; a process that finds the lock taken polls for the holder's token, bounded by the token timeout,
then fetches on its own. While Redis is down or slow each process fetches on its own.

Redis holds these tokens: secure it as any secret store (the README says so).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.credentials import TOKEN_TIMEOUT, Token
from router.tokens import refresh_margin

if TYPE_CHECKING:
    from router.shared_state import SharedState
    from router.tokens import TokenCell

FAULTS = (RedisError, OSError, asyncio.TimeoutError)
LOCK_MS = int((TOKEN_TIMEOUT + 2.0) * 1000)  # the lock outlives one bounded fetch, not much more
POLL = 0.05  # seconds between looks at the lock holder's token
UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@runtime_checkable
class Rotating(Protocol):
    """A source whose refresh token another process may have rotated (router.credential_oauth2)."""

    def rotate(self, refresh_token: str) -> None: ...


class Keys(NamedTuple):
    access: str
    refresh: str
    lock: str


class SharedTokens:
    """The token cache's side of one gateway's shared state; see the module docstring."""

    def __init__(self, client: Redis, prefix: str, wall: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.wall = wall

    def keys(self, account_key: str) -> Keys:
        tag = f"{{{self.prefix}:cred:{account_key}}}"
        return Keys(f"{tag}:access", f"{tag}:refresh", f"{tag}:lock")

    async def obtain(self, cell: TokenCell, http: aiohttp.ClientSession) -> Token:
        keys = self.keys(cell.key)
        owner = secrets.token_hex(8)
        try:
            token = await self._read(cell, keys)
            if token is not None:
                return token
            locked = await self.client.set(keys.lock, owner, nx=True, px=LOCK_MS)
        except FAULTS:
            return await cell.source.fetch(http)  # no sharing while Redis is down: as without it
        if locked:
            try:
                return await self._fetch(cell, keys, http)
            finally:
                await self._quietly(self.client.eval(UNLOCK, 1, keys.lock, owner))
        token = await self._await_holder(cell, keys)
        return token if token is not None else await self._fetch(cell, keys, http)

    async def _fetch(self, cell: TokenCell, keys: Keys, http: aiohttp.ClientSession) -> Token:
        """Fetch from the token server and share the answer (the token; a rotated refresh token)."""
        token = await cell.source.fetch(http)
        now = self.wall()
        refresh_at = token.expires_at - refresh_margin(token, now)  # as the cache would refresh it
        access = orjson.dumps({"fp": cell.fingerprint, "access_token": token.access_token,
                               "expires_at": token.expires_at, "refresh_at": refresh_at})
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.access, access, px=max(1, int((token.expires_at - now) * 1000)))
        if token.refresh_token:
            pipe.set(keys.refresh, orjson.dumps({"fp": cell.fingerprint, "refresh_token": token.refresh_token}))
        await self._quietly(pipe.execute())
        return token

    async def _await_holder(self, cell: TokenCell, keys: Keys) -> Token | None:
        """Another process holds the lock: its token once written, or None after the token timeout
        (or as soon as its lock is gone without a token)."""
        deadline = time.monotonic() + TOKEN_TIMEOUT
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            try:
                token = await self._read(cell, keys)
                if token is not None or not await self.client.exists(keys.lock):
                    return token
            except FAULTS:
                return None
        return None

    async def _read(self, cell: TokenCell, keys: Keys) -> Token | None:
        """The shared token when it is fresh; adopts a rotated refresh token on the way."""
        access, refresh = await self.client.mget([keys.access, keys.refresh])
        rotated = _doc(refresh, cell.fingerprint).get("refresh_token")
        if isinstance(rotated, str) and rotated and isinstance(cell.source, Rotating):
            cell.source.rotate(rotated)
        doc = _doc(access, cell.fingerprint)
        token, expires_at, refresh_at = doc.get("access_token"), doc.get("expires_at"), doc.get("refresh_at")
        if not isinstance(token, str) or not token or token == cell.stale:
            return None
        if not isinstance(expires_at, float | int) or not isinstance(refresh_at, float | int):
            return None
        return Token(token, float(expires_at)) if refresh_at > self.wall() else None

    @staticmethod
    async def _quietly(call: Awaitable[Any]) -> None:
        """A write whose failure changes nothing here (the token is already ours): faults ignored."""
        try:
            await call
        except FAULTS:
            return


def _doc(raw: object, fingerprint: str) -> dict[str, object]:
    """A shared value written for this credential (another fingerprint's, or garbage: empty)."""
    if not isinstance(raw, bytes | str):
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) and doc.get("fp") == fingerprint else {}


def shared_tokens(state: SharedState) -> SharedTokens:
    """The shared side for a gateway's shared state (its connection and key prefix)."""
    return SharedTokens(state.client, state.settings.prefix)
