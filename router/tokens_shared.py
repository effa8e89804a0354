"""Access tokens shared among processes: one refresh across them, the token and a rotated refresh token
shared, and no account disabled on a refusal another process's rotation explains.

Two stores hold what is shared (:class:`TokenStore`): Redis with ``state.backend: redis``
(:mod:`router.tokens_redis`, across workers and replicas) and, with ``--workers N`` and the memory
state, the workers' private directory (:mod:`router.tokens_files`). Per token account each holds,
tagged with the credential's fingerprint (a process with another config for the account ignores it):

- the current access token, its expiry and when to refresh it;
- the latest rotated refresh token (RFC 6749 section 6): a restarted process uses it rather than the
  configured one the server already replaced;
- a lock: the process refreshing now.

A refresh (:meth:`SharedTokens.obtain`, run by the cache's single flight): a shared token that is fresh
(and not the one the upstream just refused) is used as is; else the lock holder reads the store again
(a holder before it may have just finished), fetches, and writes the token and a rotated refresh token
before it releases the lock; a process that finds the lock taken polls for the holder's token, bounded
by the token timeout, then reads once more and fetches on its own. While the store is unreachable each
process fetches on its own.

A refusal (``invalid_grant``) of a refresh token another process may have rotated away is checked
against the store (:meth:`SharedTokens._confirm`, re-read for up to ``CONFIRM_BOUND``): a newer shared
refresh token is adopted and tried once more; an unreadable store fails the refresh as transient (the
account is not disabled); only a store that still holds the refused token once no other process's
refresh is running (its rotation may be on its way) confirms the grant is dead.

The store holds these tokens: secure it as any secret store (the README says so).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import aiohttp
import orjson

from router.credentials import TOKEN_TIMEOUT, CredentialRevoked, CredentialUnavailable, Token
from router.tokens import refresh_margin

if TYPE_CHECKING:
    from router.tokens import TokenCell

LOCK_MS = int((TOKEN_TIMEOUT + 2.0) * 1000)  # the lock outlives one bounded fetch, not much more
POLL = 0.05  # seconds between looks at the lock holder's token
CONFIRM_BOUND = 2.0  # seconds a refusal's check re-reads an unreachable store (a stalled Redis) before giving up
CONFIRM_POLL = 0.1  # seconds between those re-reads
TRIES = 2  # fetches per refresh: the first, and one with a newer shared refresh token
UNSURE = "token endpoint refused a refresh token another process may have rotated, and the shared state cannot tell"


class StoreUnavailable(Exception):
    """The store did not answer (a Redis fault, a file error): nothing shared was read or written."""


class TokenStore(Protocol):
    """Where processes share one account's tokens; every call raises :class:`StoreUnavailable` on a fault.
    The values are opaque bytes (JSON documents made here)."""

    async def read(self, key: str) -> tuple[object, object]:
        """The account's access document and refresh document (None where absent)."""
        ...

    async def lock(self, key: str, owner: str, ttl_ms: int) -> bool: ...

    async def unlock(self, key: str, owner: str) -> None: ...

    async def locked(self, key: str) -> bool: ...

    async def write(self, key: str, access: bytes, ttl_ms: int, refresh: bytes | None) -> None: ...


@runtime_checkable
class Rotating(Protocol):
    """A source whose refresh token another process may have rotated (router.credential_oauth2)."""

    refresh_token: str

    def rotate(self, refresh_token: str) -> None: ...


class SharedTokens:
    """The token cache's side of a store shared with other processes; see the module docstring."""

    def __init__(self, store: TokenStore, wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.wall = wall

    async def obtain(self, cell: TokenCell, http: aiohttp.ClientSession) -> Token:
        owner = secrets.token_hex(8)
        try:
            token = await self._read(cell)
            if token is not None:
                return token
            locked = await self.store.lock(cell.key, owner, LOCK_MS)
        except StoreUnavailable:
            return await self._fetch(cell, http)  # no sharing while the store is down: as without it
        if locked:
            try:
                token = await self._reread(cell)  # a holder before us may have finished since our read
                return token if token is not None else await self._fetch(cell, http, holding=True)
            finally:
                await self._quietly_unlock(cell.key, owner)
        token = await self._await_holder(cell)
        if token is not None:
            return token
        token = await self._reread(cell)  # the holder gave up or is slow: its rotation, if it wrote one
        return token if token is not None else await self._fetch(cell, http)

    async def _fetch(self, cell: TokenCell, http: aiohttp.ClientSession, holding: bool = False) -> Token:
        """Fetch from the token server (a refusal checked against the store) and share the answer;
        ``holding``: this process holds the account's lock (no other refresh runs through the store)."""
        source = cell.source
        for attempt in range(TRIES):
            sent = source.refresh_token if isinstance(source, Rotating) else None
            try:
                token = await source.fetch(http)
            except CredentialRevoked:
                if sent is None or not await self._confirm(cell, sent, attempt == TRIES - 1, holding):
                    raise
                continue  # a newer shared refresh token was adopted: try it
            await self._share(cell, token)
            return token
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _confirm(self, cell: TokenCell, sent: str, last: bool, holding: bool) -> bool:
        """After ``sent`` was refused: True when the store holds a newer refresh token (adopted: try
        again); False when it confirms ``sent`` is the latest (the grant is dead), once no other
        process's refresh is running (its rotation may be on its way). Raises CredentialUnavailable
        when the store cannot tell (the account is not disabled on a guess), or when the newer one
        came too late to try in this refresh."""
        latest = await self._latest(cell)
        if latest == sent and not holding:
            latest = await self._after_holder(cell)
        if not latest or latest == sent:
            return False
        assert isinstance(cell.source, Rotating)
        cell.source.rotate(latest)
        if last:
            raise CredentialUnavailable("refresh token rotated by another process twice during one refresh")
        return True

    async def _latest(self, cell: TokenCell) -> str | None:
        """The store's refresh token for the account, re-read for up to ``CONFIRM_BOUND`` while the
        store does not answer (then CredentialUnavailable)."""
        deadline = time.monotonic() + CONFIRM_BOUND
        while True:
            try:
                return _refresh_of(await self.store.read(cell.key), cell.fingerprint)
            except StoreUnavailable:
                if time.monotonic() + CONFIRM_POLL > deadline:
                    raise CredentialUnavailable(UNSURE) from None
                await asyncio.sleep(CONFIRM_POLL)

    async def _after_holder(self, cell: TokenCell) -> str | None:
        """The store's refresh token once another process's refresh (its lock) is over, bounded."""
        deadline = time.monotonic() + TOKEN_TIMEOUT
        try:
            while await self.store.locked(cell.key) and time.monotonic() < deadline:
                await asyncio.sleep(POLL)
            return _refresh_of(await self.store.read(cell.key), cell.fingerprint)
        except StoreUnavailable:
            raise CredentialUnavailable(UNSURE) from None

    async def _share(self, cell: TokenCell, token: Token) -> None:
        """Write the token (and a rotated refresh token) for the others; a rotated one is retried for
        up to ``CONFIRM_BOUND`` (the others cannot refresh without it), the token alone is not."""
        now = self.wall()
        refresh_at = token.expires_at - refresh_margin(token, now)  # as the cache would refresh it
        access = orjson.dumps({"fp": cell.fingerprint, "access_token": token.access_token,
                               "expires_at": token.expires_at, "refresh_at": refresh_at})
        refresh = (orjson.dumps({"fp": cell.fingerprint, "refresh_token": token.refresh_token})
                   if token.refresh_token else None)
        ttl_ms = max(1, int((token.expires_at - now) * 1000))
        deadline = time.monotonic() + CONFIRM_BOUND
        while True:
            try:
                await self.store.write(cell.key, access, ttl_ms, refresh)
                return
            except StoreUnavailable:
                if refresh is None or time.monotonic() + CONFIRM_POLL > deadline:
                    return  # the token is ours already; the others fetch their own
                await asyncio.sleep(CONFIRM_POLL)

    async def _await_holder(self, cell: TokenCell) -> Token | None:
        """Another process holds the lock: its token once written, or None after the token timeout
        (or as soon as its lock is gone without a token)."""
        deadline = time.monotonic() + TOKEN_TIMEOUT
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            try:
                token = await self._read(cell)
                if token is not None or not await self.store.locked(cell.key):
                    return token
            except StoreUnavailable:
                return None
        return None

    async def _reread(self, cell: TokenCell) -> Token | None:
        """:meth:`_read`, a fault read as nothing found (the fetch that follows checks a refusal)."""
        try:
            return await self._read(cell)
        except StoreUnavailable:
            return None

    async def _read(self, cell: TokenCell) -> Token | None:
        """The shared token when it is fresh; adopts a rotated refresh token on the way."""
        access, refresh = await self.store.read(cell.key)
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

    async def _quietly_unlock(self, key: str, owner: str) -> None:
        """A release whose failure changes nothing here (the lock expires on its own)."""
        try:
            await self.store.unlock(key, owner)
        except StoreUnavailable:
            return


def _refresh_of(docs: tuple[object, object], fingerprint: str) -> str | None:
    """The refresh token in a store's (access, refresh) documents for this credential, if any."""
    latest = _doc(docs[1], fingerprint).get("refresh_token")
    return latest if isinstance(latest, str) and latest else None


def _doc(raw: object, fingerprint: str) -> dict[str, object]:
    """A shared value written for this credential (another fingerprint's, or garbage: empty)."""
    if not isinstance(raw, bytes | str):
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) and doc.get("fp") == fingerprint else {}
