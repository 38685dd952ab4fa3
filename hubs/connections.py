"""Negotiated connections: the token a negotiate hands out, claimed once by the WebSocket.

Stored in the Django cache (``CACHE_ALIAS``): local memory in the embedded mode, Redis in
production, so negotiate and the WebSocket may reach different processes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.core.cache import caches

from .conf import conduit_settings


def new_connection_id() -> str:
    """16 random bytes, base64url: safe in a URL without escaping (the JS client does not escape)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class NegotiatedConnection:
    """What negotiate promised: the public connection id, for which hub and which user."""

    connection_id: str
    hub: str
    user_pk: str | None


def _key(token: str) -> str:
    return f"{conduit_settings.KEY_PREFIX}:negotiated:{token}"


def _cache():
    return caches[conduit_settings.CACHE_ALIAS]


def register(hub: str, user_pk: str | None, *, version: int) -> tuple[str, str]:
    """Create a connection for negotiate; return ``(connection_id, connection_token)``.

    Version 0 clients (the Python clients) put the connection id in ``?id=``, so for them the
    token is the id; version 1 gets a separate secret token.
    """
    connection_id = new_connection_id()
    token = connection_id if version == 0 else new_connection_id()
    record = {"cid": connection_id, "hub": hub, "uid": user_pk}
    _cache().set(_key(token), record, timeout=conduit_settings.NEGOTIATE_TIMEOUT)
    return connection_id, token


async def aclaim(token: str) -> NegotiatedConnection | None:
    """Take a negotiated connection for a WebSocket, once; None if unknown, expired or already
    taken (also by a WebSocket racing this one with the same token)."""
    if not token or len(token) > 64:
        return None
    cache = _cache()
    key = _key(token)
    record = await cache.aget(key)
    if record is None:
        return None
    # The claim is the delete, not the read: several WebSockets may read the record at once, but
    # only one delete removes the key, and Django's ``delete()`` answers whether it did. That is
    # one atomic step in both backends the project uses: LocMemCache deletes under its lock and
    # answers False for a missing key; RedisCache sends one DEL and answers ``bool(count)``.
    # Whoever gets False lost the race (or the record expired in between): refused.
    if not await cache.adelete(key):
        return None
    return NegotiatedConnection(connection_id=record["cid"], hub=record["hub"], user_pk=record["uid"])
