"""Redis clients for Conduit RT's own state (histories, memberships, pending acks), one per event loop.

``redis.asyncio`` connections belong to the event loop that opened them, and synchronous senders
run each send in a loop of their own (``async_to_sync``), so a backend keeps one client per loop,
forgotten with the loop, and a ``TickPipeline`` per loop for the small writes many coroutines
make at once (``batch()``).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from .tick_pipeline import TickPipeline


class PerLoopRedis:
    """Hands out the running loop's ``redis.asyncio.Redis`` for one URL.

    Each client's pool is capped at ``max_connections``, and a caller past the cap waits (up to
    ``pool_timeout``) for a connection instead of opening another: a burst of a thousand
    disconnects would otherwise open a connection per concurrent call and keep them all
    (redis-py 7's pools are unbounded and never shrink; redis-py 8's raise past 100). The wait
    is long on purpose: in a storm of thousands of connects, callers queue for the pool while
    the loop is busy, and a wait is what they need, not a failure; an unreachable Redis still
    fails each call after ``socket_timeout``.
    """

    def __init__(
        self, url: str, *, socket_timeout: float = 5.0, pool_timeout: float = 60.0, max_connections: int = 50
    ) -> None:
        self.url = url
        self.socket_timeout = socket_timeout
        self.pool_timeout = pool_timeout
        self.max_connections = max_connections
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TickPipeline] = (
            weakref.WeakKeyDictionary()
        )

    def client(self) -> Any:
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.pool_timeout,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
            )
            found = aioredis.Redis.from_pool(pool)
            self._clients[loop] = found
        return found

    def batch(self) -> TickPipeline:
        """The running loop's ``TickPipeline`` on its client: commands queued through it in one
        loop iteration share a round trip."""
        loop = asyncio.get_running_loop()
        found = self._batches.get(loop)
        if found is None:
            found = self._batches[loop] = TickPipeline(self.client())
        return found

    async def aclose(self) -> None:
        """Close the running loop's client (tests; servers let clients live with their loop)."""
        self._batches.pop(asyncio.get_running_loop(), None)
        found = self._clients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found.aclose()
