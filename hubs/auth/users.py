"""``RecentUsers``: the users this process resolved a moment ago, so a connect storm does not hit
the database once per token or session.

A token validator that can tell the user's key from the token alone (``TwoStepValidator``, as the
signed tokens do) gets its users from here: the token's signature and expiry are checked on every
use, only the user lookup is remembered. Django sessions are remembered by session key the same
way. An entry lives ``USER_CACHE_TTL`` seconds (0 turns the cache off): a user made inactive,
deleted, or logged out is refused at most that long after the change. At most ``MAX_ENTRIES``
users are kept, the least recently used dropped first. Only users found are kept, never a miss.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

#: The most users one process keeps.
MAX_ENTRIES = 10_000


class RecentUsers:
    """Users by key (``(validator, user key)`` or ``("session", session key)``), each for ``ttl``
    seconds on ``clock``."""

    def __init__(
        self, *, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: Hashable, ttl: float, load: Callable[[], Awaitable[Any]]) -> Any:
        """The user under ``key`` if it was loaded less than ``ttl`` seconds ago, else
        ``await load()`` (kept when it is not None)."""
        now = self._clock()
        found = self._entries.get(key)
        if found is not None:
            if now - found[0] < ttl:
                self._entries.move_to_end(key)
                return found[1]
            del self._entries[key]
        user = await load()
        if user is not None and ttl > 0:
            self._entries[key] = (now, user)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return user

    def clear(self) -> None:
        self._entries.clear()
