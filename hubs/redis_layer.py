"""``RedisChannelLayer``: channels-redis with a bounded pool per Redis server that makes callers
wait for a connection instead of opening one more.

channels-redis opens its pools without a limit (``ConnectionPool.from_url``), so every coroutine
that sends while the others still hold their connections opens a new one: 5,000 clients leaving
at once took a server process from 670 to 5,571 Redis clients (``bench/connect.py``), and near
20,000 they reached Redis's ``maxclients`` (10,000) and locked out every other client of that
Redis. Here each server's pool is a ``BlockingConnectionPool`` of at most ``max_connections``
(default 100), and a caller past it waits up to ``pool_timeout`` seconds (60). ``group_add``
sends its two commands (the member, the group's expiry) in one round trip instead of two: a hub
connection joins two or three groups as it opens. Everything else is channels-redis's code:
configure it with the same options, under ``"BACKEND": "hubs.redis_layer.RedisChannelLayer"``
(the host entries may be URLs or dicts with an ``address``; Sentinel entries keep
channels-redis's own pool).
"""

from __future__ import annotations

import time
from typing import Any

from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer
from redis import asyncio as aioredis

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
