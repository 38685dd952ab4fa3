"""The membership registry: one contract, two backends (memory, real Redis)."""

from __future__ import annotations

import secrets

import pytest
import redis.asyncio as aioredis
from django.test import override_settings

from hubs.delivery.members import MemoryMembers, RedisMembers


@pytest.fixture(params=["memory", "redis"])
async def members(request):
    if request.param == "memory":
        yield MemoryMembers()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"t{secrets.token_hex(4)}"
    with override_settings(CONDUIT_RT={"KEY_PREFIX": prefix, "REDIS_URL": url}):
        backend = RedisMembers()
    yield backend
    client = aioredis.Redis.from_url(url)
    keys = await client.keys(f"{prefix}:*")
    if keys:
        await client.delete(*keys)
    await client.aclose()
    for redis_client in list(backend._clients.values()):
        await redis_client.aclose()


async def test_add_remove_and_union(members):
    await members.add("c1", ["g.a", "all"])
    await members.add("c2", ["g.a", "g.b", "all"])
    await members.add("c3", ["all"])
    assert await members.members(["g.a"]) == {"c1", "c2"}
    assert await members.members(["g.a", "g.b"]) == {"c1", "c2"}
    assert await members.members(["all"]) == {"c1", "c2", "c3"}
    await members.remove("c2", ["g.a", "g.b", "all"])
    await members.remove("c2", ["g.a"])  # twice: no error
    assert await members.members(["g.a", "g.b"]) == {"c1"}
    assert await members.members(["nobody"]) == set()
    assert await members.members([]) == set()
