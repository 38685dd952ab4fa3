"""Per-client rate limit on hub invocations (``RATE_LIMIT``, e.g. ``"100/minute"``), on the
``limits`` library: its strategies, and its storage in Redis (``REDIS_URL``, shared by every
server process, so a client cannot escape its limit by connecting to another one) or in memory.

A client is its connection (``RATE_LIMIT_SCOPE = "connection"``, the default), or its user when
it has one (``"user"``: every connection of the user, on every server, shares one count; anonymous
connections still count alone). The limit applies to the invocations
a connection's worker runs (``Hub._invocation_worker``): one over the limit waits, in the
connection's queue of ``MAX_PENDING_INVOCATIONS``, until the window lets it through; a full queue
refuses what comes next with an error for that client only. Acknowledgements and nacks are not
limited (they are handled inline: limiting them would only cause retries).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.aio import strategies
from limits.storage import storage_from_string

from .conf import conduit_settings

logger = logging.getLogger(__name__)

STRATEGIES: dict[str, type[strategies.RateLimiter]] = {
    "moving-window": strategies.MovingWindowRateLimiter,
    "fixed-window": strategies.FixedWindowRateLimiter,
    "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
}

#: Longest single wait before the limiter is asked again (the window may free up earlier when
#: another process's hits expire).
MAX_WAIT = 5.0


class InvocationLimiter:
    """``RATE_LIMIT`` for one event loop (the storage's Redis client belongs to it)."""

    def __init__(self, rate: str, strategy: str, redis_url: str | None, key_prefix: str) -> None:
        self.item: RateLimitItem = parse(rate)
        if strategy not in STRATEGIES:
            raise ValueError(f"RATE_LIMIT_STRATEGY must be one of {sorted(STRATEGIES)}, not {strategy!r}.")
        prefix = f"{key_prefix}:limits"
        if redis_url:
            uri = "async+" + redis_url
            storage: Any = storage_from_string(uri, implementation="redispy", key_prefix=prefix)
        else:
            storage = storage_from_string("async+memory://")
        self.storage = storage
        self.limiter = STRATEGIES[strategy](storage)

    async def try_acquire(self, *identifiers: str) -> float:
        """Take one hit for the client; 0.0 if it was allowed, else seconds to wait before asking
        again (at most ``MAX_WAIT``)."""
        if await self.limiter.hit(self.item, *identifiers):
            return 0.0
        stats = await self.limiter.get_window_stats(self.item, *identifiers)
        return min(MAX_WAIT, max(0.05, stats.reset_time - time.time()))


def client_key(hub_namespace: str, user_id: str | None, connection_id: str) -> tuple[str, str]:
    """The identifiers a client's hits are counted under (``RATE_LIMIT_SCOPE``)."""
    if conduit_settings.RATE_LIMIT_SCOPE == "user" and user_id is not None:
        return (hub_namespace, f"user:{user_id}")
    return (hub_namespace, f"connection:{connection_id}")


def limiter_key() -> tuple[str, str, str | None, str] | None:
    """What a limiter is built from (``InvocationLimiter(*key)``); None when ``RATE_LIMIT`` is
    off. ``hubs.runtime`` keeps one limiter per loop and builds it again when this changes."""
    rate = conduit_settings.RATE_LIMIT
    if not rate:
        return None
    settings = conduit_settings
    return (str(rate), str(settings.RATE_LIMIT_STRATEGY), settings.REDIS_URL, str(settings.KEY_PREFIX))
