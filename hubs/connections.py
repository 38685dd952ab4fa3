"""Negotiated connections: the token a negotiate hands out, claimed once by the WebSocket.

Negotiate and the WebSocket may reach different processes, so the record is shared: in Redis
(``REDIS_URL``: the stores' own client, one pooled connection per loop, a claim in one
``MULTI``/``GET``/``DEL`` round trip), else in the Django cache ``CACHE_ALIAS`` (local memory in
the embedded mode). Records live ``NEGOTIATE_TIMEOUT`` seconds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from django.core.cache import caches

from .conf import conduit_settings
from .delivery.built import BuiltOnUse
from .delivery.redis import PerLoopRedis

#: The longest token a WebSocket may present (ours are 22 characters).
MAX_TOKEN_LENGTH = 64


def new_connection_id() -> str:
    """16 random bytes, base64url: safe in a URL without escaping (the JS client does not escape)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class NegotiatedConnection:
    """What negotiate promised: the public connection id, for which hub and which user."""

    connection_id: str
    hub: str
    user_pk: str | None


class NegotiatedStore(Protocol):
    """Where negotiated records wait for their WebSocket."""

    async def put(self, token: str, record: dict[str, Any], ttl: float) -> None: ...

    async def take(self, token: str) -> dict[str, Any] | None:
        """The record of ``token``, removed; None when unknown, expired or already taken. Atomic:
        of several WebSockets racing with one token, one gets the record."""
        ...


class RedisNegotiated:
    """Records as Redis strings ``<KEY_PREFIX>:negotiated:<token>``, written and taken in the
    round trip the loop's other connects share (``TickPipeline``)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.redis = PerLoopRedis(url)
        self.prefix = f"{prefix}:negotiated:"

    async def put(self, token: str, record: dict[str, Any], ttl: float) -> None:
        raw, milliseconds = orjson.dumps(record), max(1, int(ttl * 1000))
        await self.redis.batch().run(lambda pipe: pipe.set(self.prefix + token, raw, px=milliseconds))

    async def take(self, token: str) -> dict[str, Any] | None:
        # GETDEL (Redis 6.2+) is the claim: of several racing WebSockets, one gets the value.
        (found,) = await self.redis.batch().run(lambda pipe: pipe.getdel(self.prefix + token))
        return orjson.loads(found) if found is not None else None


class CacheNegotiated:
    """Records in the Django cache ``alias``."""

    def __init__(self, alias: str, prefix: str) -> None:
        self.alias = alias
        self.prefix = f"{prefix}:negotiated:"

    async def put(self, token: str, record: dict[str, Any], ttl: float) -> None:
        await caches[self.alias].aset(self.prefix + token, record, timeout=ttl)

    async def take(self, token: str) -> dict[str, Any] | None:
        cache = caches[self.alias]
        key = self.prefix + token
        record = await cache.aget(key)
        if record is None:
            return None
        # The claim is the delete, not the read: several WebSockets may read the record at once,
        # but only one delete removes the key, and Django's ``delete()`` answers whether it did
        # (LocMemCache deletes under its lock; RedisCache sends one DEL and answers its count).
        # Whoever gets False lost the race (or the record expired in between).
        return record if await cache.adelete(key) else None


def _build() -> NegotiatedStore:
    if conduit_settings.REDIS_URL:
        return RedisNegotiated(conduit_settings.REDIS_URL, conduit_settings.KEY_PREFIX)
    return CacheNegotiated(conduit_settings.CACHE_ALIAS, conduit_settings.KEY_PREFIX)


#: ``get_negotiated()``: the store, built from the settings on first use.
get_negotiated: BuiltOnUse[NegotiatedStore] = BuiltOnUse(
    lambda: (conduit_settings.REDIS_URL, conduit_settings.CACHE_ALIAS, conduit_settings.KEY_PREFIX), _build
)


async def aregister(hub: str, user_pk: str | None, *, version: int) -> tuple[str, str]:
    """Create a connection for negotiate; return ``(connection_id, connection_token)``.

    Version 0 clients (the Python clients) put the connection id in ``?id=``, so for them the
    token is the id; version 1 gets a separate secret token.
    """
    connection_id = new_connection_id()
    token = connection_id if version == 0 else new_connection_id()
    record = {"cid": connection_id, "hub": hub, "uid": user_pk}
    await get_negotiated().put(token, record, float(conduit_settings.NEGOTIATE_TIMEOUT))
    return connection_id, token


async def aclaim(token: str) -> NegotiatedConnection | None:
    """Take a negotiated connection for a WebSocket, once; None if unknown, expired or already
    taken (also by a WebSocket racing this one with the same token)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    record = await get_negotiated().take(token)
    if record is None:
        return None
    return NegotiatedConnection(connection_id=record["cid"], hub=record["hub"], user_pk=record["uid"])
