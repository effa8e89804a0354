"""The access-token cache: each token account's current token, refreshed ahead of its expiry, one
refresh per account at a time however many requests wait.

- Fast path (:meth:`Tokens.view`): a fresh token's template view, built once per token; no await.
- Refresh-ahead: from ``refresh_at`` (a margin before expiry: 60 s, or a tenth of a short lifetime)
  a request still gets the current token and starts one refresh in the background; only a token past
  ``usable_until`` makes requests wait, all of them on the same refresh (bounded by ``WAIT_BOUND``).
- A failed refresh fails the attempt (``connect_error``: the retry policy rotates to another account)
  and is not hammered: the next try waits a backoff (1 s doubling to 30 s).
- A refusal for good (``invalid_grant``: :class:`~router.credentials.CredentialRevoked`) disables the
  account: every pick strategy skips it (``AccountState.disabled``), ``/admin/accounts`` shows the
  reason (the error code), one warning is logged and ``router_account_credentials_revoked`` counts
  it. It is never refreshed again until a reload changes its credential (:meth:`Tokens.keep`).
- Cells outlive snapshots (one per account key, the gateway's): a rotated refresh token lives in the
  cell's own source, kept while the credential's fingerprint is unchanged.
- With ``state: redis`` (or ``--workers N`` and the memory state) the fetch goes through
  :mod:`router.tokens_shared` (one refresh across processes, the token and the rotated refresh token
  shared, a refusal checked against the shared refresh token before the account is disabled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import aiohttp

from router.credentials import TOKEN_TIMEOUT, CredentialRevoked, CredentialUnavailable, Token, TokenSource
from router.failures import UpstreamFailure

if TYPE_CHECKING:
    from router.accounts import Account, StateStore

log = logging.getLogger("router.tokens")

REFRESH_MARGIN = 60.0  # seconds before expiry a token is refreshed (in the background: it still serves)
MARGIN_SHARE = 0.1  # a short-lived token: a tenth of its lifetime instead
SKEW = 5.0  # a token this close to its expiry is not sent: the upstream's clock may be ahead of ours
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # seconds before another refresh after a failed one (doubling)
WAIT_BOUND = 2 * TOKEN_TIMEOUT + 2.0  # a request's wait for a refresh (with Redis: another process's, then ours)


def refresh_margin(token: Token, now: float) -> float:
    """Seconds before its expiry a token is refreshed: 60, or a tenth of a shorter lifetime."""
    return min(REFRESH_MARGIN, MARGIN_SHARE * max(token.expires_at - now, 0.0))


class SharedFetch(Protocol):
    """How a refresh goes through a store shared with other processes (``router.tokens_shared.SharedTokens``)."""

    async def obtain(self, cell: TokenCell, http: aiohttp.ClientSession) -> Token: ...


class TokenCell:
    """One token account's token and refresh state (the gateway's, across snapshots)."""

    __slots__ = ("backoff", "base", "error", "fingerprint", "flight", "key", "provider", "refresh_at", "retry_at",
                 "revoked", "source", "stale", "token", "usable_until", "view")

    def __init__(self, account: Account, source: TokenSource) -> None:
        self.key, self.provider, self.fingerprint = account.state_key, account.provider, account.credential_id
        self.source = source  # this cell's own: a rotated refresh token stays in it
        self.base = account.template_view  # the account's view without a token
        self.token: Token | None = None
        self.view: dict[str, str] = self.base
        self.refresh_at = self.usable_until = 0.0  # wall clock
        self.flight: asyncio.Task[None] | None = None  # the refresh running now (at most one)
        self.retry_at, self.backoff, self.error = 0.0, 0.0, ""
        self.revoked = ""  # the refusal (an error code, never a secret): the account is disabled
        self.stale = ""  # an access token the upstream refused (401): never taken back from the shared state

    def use(self, token: Token, now: float) -> None:
        margin = refresh_margin(token, now)
        self.token, self.refresh_at = token, token.expires_at - margin
        self.usable_until = token.expires_at - min(SKEW, margin)
        self.view = {**self.base, "access_token": token.access_token}
        self.retry_at = self.backoff = 0.0
        self.error = ""


class Tokens:
    """Every token account's cell; one per gateway process (kept across reloads)."""

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.cells: dict[str, TokenCell] = {}
        self.shared: SharedFetch | None = None  # state: redis, or --workers' directory (router.tokens_shared)
        self.refreshes: dict[tuple[str, str], int] = {}  # (provider, ok | failed | revoked) -> count
        self.revocations: dict[tuple[str, str], int] = {}  # (provider, account label) -> count
        self._tasks: set[asyncio.Task[None]] = set()

    def view(self, account: Account) -> dict[str, str] | None:
        """The account's template view with a fresh token, or None (:meth:`obtain` then)."""
        cell = self.cells.get(account.state_key)
        if cell is not None and cell.refresh_at > self.clock() and cell.fingerprint == account.credential_id:
            return cell.view
        return None

    async def obtain(self, account: Account, http: aiohttp.ClientSession) -> dict[str, str] | UpstreamFailure:
        """The view with a usable token (starting a refresh when one is due), or the attempt's failure."""
        cell = self._cell(account)
        if cell.usable_until > self.clock() and not cell.revoked:
            self._start(cell, http)  # refresh-ahead: this token serves meanwhile
            return cell.view
        try:
            await self._wait(cell, http)
        except (CredentialRevoked, CredentialUnavailable) as e:
            return UpstreamFailure("connect_error", f"account '{account.email}' has no access token: {e}")
        return cell.view

    def expire(self, account: Account, view: dict[str, str]) -> None:
        """The upstream refused this view's token (401): the next use refreshes first."""
        cell = self.cells.get(account.state_key)
        if cell is not None and cell.view is view:
            cell.refresh_at = cell.usable_until = 0.0
            cell.stale = view.get("access_token", "")
            cell.retry_at = 0.0  # a refusal is news: no backoff from an earlier failure holds it back

    def keep(self, accounts: Iterable[Account]) -> None:
        """A new snapshot: cells of accounts gone or whose credential changed are dropped, and such an
        account's ``disabled`` mark goes with its cell (a new credential gets a new chance)."""
        wanted = {a.state_key: a.credential_id for a in accounts if a.source is not None}
        for key, cell in list(self.cells.items()):
            if wanted.get(key) != cell.fingerprint:
                del self.cells[key]
                state = self.store.accounts.get(key)
                if state is not None:
                    state.disabled = ""

    def _cell(self, account: Account) -> TokenCell:
        cell = self.cells.get(account.state_key)
        if cell is None or cell.fingerprint != account.credential_id:
            assert account.source is not None
            cell = self.cells[account.state_key] = TokenCell(account, account.source)
        return cell

    async def _wait(self, cell: TokenCell, http: aiohttp.ClientSession) -> None:
        """Until this cell's refresh (ours or one already running) is done, bounded; raises when it
        brought no usable token."""
        if cell.revoked:
            raise CredentialRevoked(cell.revoked)
        task = self._start(cell, http)
        if task is None:
            raise CredentialUnavailable(f"{cell.error}; next refresh in {cell.retry_at - self.clock():.1f} s")
        try:
            await asyncio.wait_for(asyncio.shield(task), WAIT_BOUND)
        except TimeoutError:
            raise CredentialUnavailable(f"token refresh still running after {WAIT_BOUND:g} s") from None
        if cell.revoked:
            raise CredentialRevoked(cell.revoked)
        if cell.usable_until <= self.clock():
            raise CredentialUnavailable(cell.error or "the token server's token expires too soon")

    def _start(self, cell: TokenCell, http: aiohttp.ClientSession) -> asyncio.Task[None] | None:
        """The cell's refresh: the one running, or a new one; None while a failure's backoff holds."""
        if cell.flight is not None:
            return cell.flight
        if self.clock() < cell.retry_at:
            return None
        task = cell.flight = asyncio.get_running_loop().create_task(self._refresh(cell, http))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _refresh(self, cell: TokenCell, http: aiohttp.ClientSession) -> None:
        try:
            shared = self.shared
            token = await (shared.obtain(cell, http) if shared is not None else cell.source.fetch(http))
        except CredentialRevoked as e:
            self._revoke(cell, str(e))
        except CredentialUnavailable as e:
            self._failed(cell, str(e))
        else:
            cell.use(token, self.clock())
            self._count(cell, "ok")
        finally:
            cell.flight = None

    def _failed(self, cell: TokenCell, error: str) -> None:
        cell.backoff = min(BACKOFF_MAX, cell.backoff * 2 or BACKOFF_FIRST)
        cell.retry_at, cell.error = self.clock() + cell.backoff, error
        self._count(cell, "failed")
        log.warning("token refresh for account %s failed: %s (next try in %g s at the earliest)", cell.key, error,
                    cell.backoff, extra={"provider": cell.provider, "account": cell.key})

    def _revoke(self, cell: TokenCell, error: str) -> None:
        cell.revoked, cell.refresh_at, cell.usable_until = error, 0.0, 0.0
        cell.view = cell.base
        self.store.state(cell.key).disabled = error
        self._count(cell, "revoked")
        label = cell.key.partition("/")[2]
        self.revocations[cell.provider, label] = self.revocations.get((cell.provider, label), 0) + 1
        log.warning("account %s disabled: %s; it stays disabled until a reload changes its credential",
                    cell.key, error, extra={"provider": cell.provider, "account": cell.key})

    def _count(self, cell: TokenCell, result: str) -> None:
        self.refreshes[cell.provider, result] = self.refreshes.get((cell.provider, result), 0) + 1

    async def close(self) -> None:
        """Cancel refreshes still running (the session they use is closing)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
