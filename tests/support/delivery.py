"""Shared pieces of the acknowledged-delivery tests: settings with a short, deterministic retry
schedule, the stores on memory or a fresh Redis key prefix, and an echo-hub connection."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from django.test import override_settings

#: Retries due at +12, +14, +15 s, then the last attempt waits 10 s: no jitter.
ACK_SETTINGS: dict[str, Any] = {
    "ACK_TIMEOUT": 10.0,
    "MAX_RETRIES": 3,
    "RETRY_BACKOFF": 2.0,
    "RETRY_BACKOFF_MAX": 5.0,
    "RETRY_JITTER": False,
}
ECHO = "tests.support.echo_hub.EchoHub"


@asynccontextmanager
async def delivery_settings(redis_url: str | None) -> AsyncIterator[dict[str, Any]]:
    """``ACK_SETTINGS`` in force, on memory stores or (``redis_url``) Redis stores under a fresh
    key prefix whose keys are deleted afterwards; yields the ``CONDUIT_RT`` dict."""
    conf = dict(ACK_SETTINGS)
    if redis_url:
        conf.update(
            REDIS_URL=redis_url,
            KEY_PREFIX=f"t{secrets.token_hex(4)}",
            HISTORY_BACKEND="hubs.delivery.history.RedisHistory",
        )
    with override_settings(CONDUIT_RT=conf):
        yield conf
    if redis_url:
        client = aioredis.Redis.from_url(redis_url)
        keys = await client.keys(f"{conf['KEY_PREFIX']}:*")
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def echo_client(hub_client: Any, token: str, group: str | None = "room") -> tuple[Any, str]:
    """A connection to the echo hub (in ``group`` unless None) and its connection id."""
    client = await hub_client("/hubs/echo", token=token)
    if group:
        await client.invoke("Join", group)
    return client, (await client.invoke("Whoami")).result["connectionId"]
