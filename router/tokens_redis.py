"""The token store in Redis (``state.backend: redis``): what :mod:`router.tokens_shared` shares, across
workers and replicas.

Per token account, under one hash tag (Redis-Cluster-safe):

- ``{<prefix>:cred:<account key>}:access``: the access token document (the key expires with the token);
- ``{<prefix>:cred:<account key>}:refresh``: the latest rotated refresh token, with no expiry;
- ``{<prefix>:cred:<account key>}:lock``: the process refreshing now (``SET NX PX``, released by
  compare-and-delete).

Every command is bounded by the state's ``timeout``; a fault raises
:class:`~router.tokens_shared.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.tokens_shared import SharedTokens, StoreUnavailable

if TYPE_CHECKING:
    from router.shared_state import SharedState

FAULTS = (RedisError, OSError, asyncio.TimeoutError)
UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Keys(NamedTuple):
    access: str
    refresh: str
    lock: str


class RedisTokenStore:
    """:class:`~router.tokens_shared.TokenStore` on one gateway's Redis connection and key prefix."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def keys(self, account_key: str) -> Keys:
        tag = f"{{{self.prefix}:cred:{account_key}}}"
        return Keys(f"{tag}:access", f"{tag}:refresh", f"{tag}:lock")

    async def read(self, key: str) -> tuple[object, object]:
        keys = self.keys(key)
        try:
            access, refresh = await self.client.mget([keys.access, keys.refresh])
        except FAULTS:
            raise StoreUnavailable("redis") from None
        return access, refresh

    async def lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        try:
            return bool(await self.client.set(self.keys(key).lock, owner, nx=True, px=ttl_ms))
        except FAULTS:
            raise StoreUnavailable("redis") from None

    async def unlock(self, key: str, owner: str) -> None:
        try:
            await self.client.eval(UNLOCK, 1, self.keys(key).lock, owner)
        except FAULTS:
            raise StoreUnavailable("redis") from None

    async def locked(self, key: str) -> bool:
        try:
            return bool(await self.client.exists(self.keys(key).lock))
        except FAULTS:
            raise StoreUnavailable("redis") from None

    async def write(self, key: str, access: bytes, ttl_ms: int, refresh: bytes | None) -> None:
        keys = self.keys(key)
        pipe = self.client.pipeline(transaction=False)
        if refresh is not None:  # first: the one the others cannot refresh without
            pipe.set(keys.refresh, refresh)
        pipe.set(keys.access, access, px=ttl_ms)
        try:
            await pipe.execute()
        except FAULTS:
            raise StoreUnavailable("redis") from None


def shared_tokens(state: SharedState) -> SharedTokens:
    """The shared side for a gateway's shared state (its connection and key prefix)."""
    return SharedTokens(RedisTokenStore(state.client, state.settings.prefix))
