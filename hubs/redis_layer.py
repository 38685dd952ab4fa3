"""``RedisChannelLayer``: channels-redis with a bounded pool per Redis server that makes callers
wait for a connection instead of opening one more.

channels-redis opens its pools without a limit (``ConnectionPool.from_url``), so every coroutine
that sends while the others still hold their connections opens a new one: 5,000 clients leaving
at once took a server process from 670 to 5,571 Redis clients (``bench/connect.py``), and near
20,000 they reached Redis's ``maxclients`` (10,000) and locked out every other client of that
Redis. Here each server's pool is a ``BlockingConnectionPool`` of at most ``max_connections``
(default 100), and a caller past it waits up to ``pool_timeout`` seconds (60). ``group_add``
sends its two commands (the member, the group's expiry) in one round trip instead of two: a hub
connection joins two or three groups as it opens. ``group_discard`` goes through a
``TickPipeline``: the removals of one loop iteration share a round trip, so a disconnect storm
(every closing hub connection leaves its own group) is a few pipelines, not one pooled command
per connection. Everything else is channels-redis's code:
configure it with the same options, under ``"BACKEND": "hubs.redis_layer.RedisChannelLayer"``
(the host entries may be URLs or dicts with an ``address``; Sentinel entries keep
channels-redis's own pool).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer
from redis import asyncio as aioredis

from .delivery.tick_pipeline import TickPipeline

#: The most connections a process opens to one Redis server of the layer, per event loop.
MAX_CONNECTIONS = 100
#: Seconds a caller waits for a connection of the pool before it fails.
POOL_TIMEOUT = 60.0


class RedisChannelLayer(ChannelsRedisChannelLayer):
    """channels-redis's layer with bounded, waiting pools (``max_connections``, ``pool_timeout``)."""

    def __init__(
        self,
        *args: Any,
        max_connections: int = MAX_CONNECTIONS,
        pool_timeout: float = POOL_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        # One per Redis client (channels-redis keeps one per loop and server), gone with it.
        self._batches: weakref.WeakKeyDictionary[Any, TickPipeline] = weakref.WeakKeyDictionary()

    def create_pool(self, index: int) -> Any:
        host = dict(self.hosts[index])
        if "address" not in host:
            return super().create_pool(index)  # Sentinel, or host/port: channels-redis's own pool
        address = host.pop("address")
        host.setdefault("max_connections", self.max_connections)
        host.setdefault("timeout", self.pool_timeout)
        return aioredis.BlockingConnectionPool.from_url(address, **host)

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` and renew the group's expiry, in one round trip."""
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        key = self._group_key(group)
        async with self.connection(self.consistent_hash(group)).pipeline(transaction=False) as pipe:
            pipe.zadd(key, {channel: time.time()})
            pipe.expire(key, self.group_expiry)
            await pipe.execute()

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group`` (no error if it is not a member), in the round trip
        of this loop iteration's other removals from groups on the same Redis server."""
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        key = self._group_key(group)
        client = self.connection(self.consistent_hash(group))
        batch = self._batches.get(client)
        if batch is None:
            batch = self._batches[client] = TickPipeline(client)
        await batch.run(lambda pipe: pipe.zrem(key, channel))
