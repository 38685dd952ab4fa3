"""Fixtures of the store tests (delivery, monitor): a fresh Redis key prefix, cleaned up afterwards."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.test import override_settings


@pytest.fixture
async def redis_backend(redis_url) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``redis_backend(BackendClass, **kwargs)`` built under a fresh ``KEY_PREFIX``.

    Every key the backends wrote is deleted and their clients closed at the end.
    """
    prefix = f"t{secrets.token_hex(4)}"
    built: list[Any] = []

    def build(backend_class: type, **kwargs: Any) -> Any:
        with override_settings(CONDUIT_RT={"KEY_PREFIX": prefix, "REDIS_URL": redis_url}):
            backend = backend_class(**kwargs)
        built.append(backend)
        return backend

    yield build
    client = aioredis.Redis.from_url(redis_url)
    keys = await client.keys(f"{prefix}:*")
    if keys:
        await client.delete(*keys)
    await client.aclose()
    for backend in built:
        await backend.redis.aclose()
