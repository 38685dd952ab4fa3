"""``hubs.redis_layer.RedisChannelLayer``: channels-redis whose pools are bounded and wait."""

from __future__ import annotations

import asyncio
import uuid

from redis import asyncio as aioredis

from hubs.redis_layer import RedisChannelLayer


async def test_a_burst_of_sends_waits_for_the_pool_instead_of_opening_connections(redis_url):
    layer = RedisChannelLayer(
        hosts=[redis_url], prefix=f"pool-{uuid.uuid4().hex}", capacity=1000, max_connections=3
    )
    channel = await layer.new_channel()
    groups = [f"g{i}" for i in range(200)]
    try:
        await asyncio.wait_for(asyncio.gather(*(layer.group_add(g, channel) for g in groups)), timeout=30)
        await asyncio.wait_for(
            asyncio.gather(*(layer.group_send(g, {"type": "tick", "g": g}) for g in groups)), timeout=30
        )
        received = {(await asyncio.wait_for(layer.receive(channel), timeout=5))["g"] for _ in groups}
        assert received == set(groups)
        pool = layer.connection(0).connection_pool
        assert isinstance(pool, aioredis.BlockingConnectionPool)
        opened = len(pool._available_connections) + len(pool._in_use_connections)
        assert pool.max_connections == 3 and opened <= 3, opened
    finally:
        await layer.flush()


def test_host_entries_keep_their_options_and_sentinels_keep_channels_redis_pools(redis_url):
    layer = RedisChannelLayer(hosts=[{"address": redis_url, "max_connections": 7, "socket_timeout": 2}])
    pool = layer.create_pool(0)
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (7, 60.0)
    assert pool.connection_kwargs["socket_timeout"] == 2
    plain = RedisChannelLayer(hosts=[("127.0.0.1", 6379)])
    assert not isinstance(plain.create_pool(0), aioredis.BlockingConnectionPool)


async def test_group_add_writes_the_member_and_the_expiry_in_one_round_trip(redis_url, monkeypatch):
    layer = RedisChannelLayer(hosts=[redis_url], prefix=f"add-{uuid.uuid4().hex}", group_expiry=900)
    channel = await layer.new_channel()
    client = layer.connection(0)
    trips: list[str] = []
    original = type(client).execute_command

    async def counting(self, *args, **options):  # one call per round trip outside a pipeline
        trips.append(str(args[0]))
        return await original(self, *args, **options)

    monkeypatch.setattr(type(client), "execute_command", counting)
    try:
        await asyncio.wait_for(layer.group_add("room", channel), timeout=10)
        assert trips == []  # no lone command: the pipeline carried both
        monkeypatch.setattr(type(client), "execute_command", original)
        key = layer._group_key("room")
        assert 0 < await client.ttl(key) <= 900
        assert await client.zscore(key, channel) is not None
        await layer.group_send("room", {"type": "tick"})
        assert (await asyncio.wait_for(layer.receive(channel), timeout=5))["type"] == "tick"
    finally:
        await layer.flush()


async def test_the_group_discards_of_one_loop_iteration_share_a_round_trip(redis_url, monkeypatch):
    layer = RedisChannelLayer(hosts=[redis_url], prefix=f"discard-{uuid.uuid4().hex}")
    channel = await layer.new_channel()
    groups = [f"g{i}" for i in range(300)]
    await asyncio.wait_for(asyncio.gather(*(layer.group_add(g, channel) for g in groups)), timeout=30)
    client = layer.connection(0)
    pipelines: list[int] = []
    original = type(client.pipeline()).execute

    async def counting(self, *args, **options):
        pipelines.append(len(self.command_stack))
        return await original(self, *args, **options)

    monkeypatch.setattr(type(client.pipeline()), "execute", counting)
    try:
        # a disconnect storm: every closing connection leaves its own group at once
        await asyncio.wait_for(asyncio.gather(*(layer.group_discard(g, channel) for g in groups)), timeout=30)
        assert pipelines == [300], pipelines
        await asyncio.wait_for(layer.group_discard("never-joined", channel), timeout=10)  # no error
        monkeypatch.setattr(type(client.pipeline()), "execute", original)
        assert [await client.exists(layer._group_key(g)) for g in groups] == [0] * len(groups)
    finally:
        await layer.flush()
