"""Who is in a group right now, by connection id: the recipients of an acknowledged send.

Channels' groups deliver but cannot be listed, and an acknowledged message needs a pending entry
for each recipient connection *before* it is sent. So every hub connection also records its
memberships here (its system groups included: its own, its user's, the hub's ``all``), on join,
leave and disconnect. Keys are the Channels group names (``hubs.naming``), so any recipient
selector (group, user, connection, all) resolves the same way.

Two backends with one contract: ``MemoryMembers`` (one process, the embedded mode) and
``RedisMembers`` (Redis sets, shared by every process). A process that dies leaves its members
behind, so membership alone does not say a connection still exists: presence does. Each server
process refreshes a lease for each of its connections (``touch``, by ``hubs.presence``) and
``alive`` answers which leases hold; a connection whose process died is gone once its lease
(``PRESENCE_TTL``) runs out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..conf import conduit_settings
from .built import BuiltOnUse
from .redis import PerLoopRedis


class Members(Protocol):
    """The contract both backends keep."""

    async def add(self, connection_id: str, channels: Iterable[str], user_id: str | None = None) -> None:
        """Record ``connection_id`` as a member of each of the Channels groups ``channels``
        (and, when given, as a connection of ``user_id``)."""
        ...

    async def remove(self, connection_id: str, channels: Iterable[str], forget_user: bool = False) -> None:
        """Forget those memberships (no error for ones that do not exist), and the connection's
        user with ``forget_user`` (at disconnect)."""
        ...

    async def members(self, channels: Iterable[str]) -> set[str]:
        """The connections in any of ``channels``."""
        ...

    async def resolve(self, channels: Iterable[str]) -> dict[str, str | None]:
        """The connections in any of ``channels``, each with its user (None: anonymous)."""
        ...

    async def resolve_alive(self, channels: Iterable[str]) -> dict[str, str | None]:
        """``resolve`` limited to connections whose presence lease holds (the recipients of an
        acknowledged send), in one round trip."""
        ...

    async def touch(self, connection_ids: Iterable[str], ttl: float) -> None:
        """Renew the presence lease of each connection for ``ttl`` seconds."""
        ...

    async def vanish(self, connection_id: str) -> None:
        """End the connection's presence lease (it closed)."""
        ...

    async def depart(self, departures: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Connections that closed, ``(connection_id, channels)`` pairs: each one's memberships
        of ``channels``, its user and its lease forgotten, all in one go."""
        ...

    async def alive(self, connection_ids: Iterable[str]) -> set[str]:
        """Those of ``connection_ids`` whose presence lease holds."""
        ...


class MemoryMembers:
    """Memberships in this process's memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._groups: dict[str, set[str]] = {}
        self._users: dict[str, str] = {}
        self._leases: dict[str, float] = {}

    async def add(self, connection_id: str, channels: Iterable[str], user_id: str | None = None) -> None:
        with self._lock:
            for channel in channels:
                self._groups.setdefault(channel, set()).add(connection_id)
            if user_id is not None:
                self._users[connection_id] = user_id

    async def remove(self, connection_id: str, channels: Iterable[str], forget_user: bool = False) -> None:
        with self._lock:
            if forget_user:
                self._users.pop(connection_id, None)
            for channel in channels:
                members = self._groups.get(channel)
                if members is not None:
                    members.discard(connection_id)
                    if not members:
                        del self._groups[channel]

    async def members(self, channels: Iterable[str]) -> set[str]:
        with self._lock:
            found: set[str] = set()
            for channel in channels:
                found |= self._groups.get(channel, set())
            return found

    async def resolve(self, channels: Iterable[str]) -> dict[str, str | None]:
        found = await self.members(channels)
        with self._lock:
            return {c: self._users.get(c) for c in found}

    async def resolve_alive(self, channels: Iterable[str]) -> dict[str, str | None]:
        found = await self.resolve(channels)
        alive = await self.alive(found)
        return {c: u for c, u in found.items() if c in alive}

    async def touch(self, connection_ids: Iterable[str], ttl: float) -> None:
        with self._lock:
            until = self._clock() + ttl
            for connection_id in connection_ids:
                self._leases[connection_id] = until

    async def vanish(self, connection_id: str) -> None:
        with self._lock:
            self._leases.pop(connection_id, None)

    async def depart(self, departures: Sequence[tuple[str, Sequence[str]]]) -> None:
        for connection_id, channels in departures:
            await self.remove(connection_id, channels, forget_user=True)
            await self.vanish(connection_id)

    async def alive(self, connection_ids: Iterable[str]) -> set[str]:
        with self._lock:
            now = self._clock()
            for connection_id in [c for c, until in self._leases.items() if until <= now]:
                del self._leases[connection_id]
            return {c for c in connection_ids if c in self._leases}


#: A Lua function: the (connection id, user id or false) pairs of the members of the ``sets``
#: whose presence lease holds (its expiry, in the leases sorted set, is after Redis's clock).
#: Shared with the pending store's one-call registration.
RESOLVE_ALIVE_FN = """
local function resolve_alive(sets, prefix)
  local out = {}
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for _, connection in ipairs(redis.call('SUNION', unpack(sets))) do
    local expiry = redis.call('ZSCORE', prefix .. 'leases', connection)
    if expiry and tonumber(expiry) > now then
      table.insert(out, connection)
      table.insert(out, redis.call('GET', prefix .. 'user-of:' .. connection))
    end
  end
  return out
end
"""

# KEYS: the member sets. ARGV: key prefix.
_RESOLVE_ALIVE = RESOLVE_ALIVE_FN + "return resolve_alive(KEYS, ARGV[1])\n"

# KEYS: the leases sorted set. ARGV: ttl ms, then connection ids. Each lease runs ttl from
# Redis's clock (one clock for every host); leases that ran out (a dead process's) are dropped.
_TOUCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local args = {}
for i = 2, #ARGV do
  table.insert(args, expiry)
  table.insert(args, ARGV[i])
  if #args >= 2000 then
    redis.call('ZADD', KEYS[1], unpack(args))
    args = {}
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
return 1
"""

# KEYS: the leases sorted set. ARGV: connection ids. Returns those whose lease holds.
_ALIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #ARGV do
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if expiry and tonumber(expiry) > now then table.insert(out, ARGV[i]) end
end
return out
"""


class RedisMembers:
    """Memberships as Redis sets ``<KEY_PREFIX>:members:<channel group>``, one round trip per
    call; the calls of a connect (``add``, ``touch``, ``resolve_alive``) share it with those of
    the other connects of the same loop iteration (``TickPipeline``). Leases are one sorted set
    (``members:leases``, each connection's expiry on Redis's clock): a presence round renews all
    of a process's leases in one command, where a key per connection cost one ``SET`` each,
    0.1 command a second per connection for as long as it is open."""

    def __init__(self, *, url: str | None = None) -> None:
        self.url = url or conduit_settings.REDIS_URL
        if not self.url:
            raise ValueError("RedisMembers needs CONDUIT_RT['REDIS_URL'].")
        self.prefix = f"{conduit_settings.KEY_PREFIX}:members:"
        self.user_ttl = 86400  # a connection's user outlives any connection of a process that died
        self.redis = PerLoopRedis(self.url)

    def _user_key(self, connection_id: str) -> str:
        return f"{self.prefix}user-of:{connection_id}"

    async def add(self, connection_id: str, channels: Iterable[str], user_id: str | None = None) -> None:
        keys = [self.prefix + channel for channel in channels]

        def build(pipe: Any) -> None:
            for key in keys:
                pipe.sadd(key, connection_id)
            if user_id is not None:
                pipe.set(self._user_key(connection_id), user_id, ex=self.user_ttl)

        await self.redis.batch().run(build)

    async def remove(self, connection_id: str, channels: Iterable[str], forget_user: bool = False) -> None:
        async with self.redis.client().pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.srem(self.prefix + channel, connection_id)
            if forget_user:
                pipe.delete(self._user_key(connection_id))
            await pipe.execute()

    def set_keys(self, channels: Iterable[str]) -> list[str]:
        """The Redis sets holding the members of ``channels``."""
        return [self.prefix + c for c in channels]

    async def members(self, channels: Iterable[str]) -> set[str]:
        keys = self.set_keys(channels)
        if not keys:
            return set()
        found = await self.redis.client().sunion(keys)
        return {m.decode() if isinstance(m, bytes) else m for m in found}

    async def resolve(self, channels: Iterable[str]) -> dict[str, str | None]:
        found = sorted(await self.members(channels))
        if not found:
            return {}
        users = await self.redis.client().mget([self._user_key(c) for c in found])
        return {c: (u.decode() if u is not None else None) for c, u in zip(found, users, strict=True)}

    async def resolve_alive(self, channels: Iterable[str]) -> dict[str, str | None]:
        keys = self.set_keys(channels)
        if not keys:
            return {}
        (found,) = await self.redis.batch().run(
            lambda pipe: pipe.eval(_RESOLVE_ALIVE, len(keys), *keys, self.prefix)
        )
        return {
            found[i].decode(): (found[i + 1].decode() if found[i + 1] else None)
            for i in range(0, len(found), 2)
        }

    @property
    def _leases_key(self) -> str:
        """The sorted set of every connection's lease: member the connection id, score the
        lease's expiry (milliseconds of Redis's clock)."""
        return f"{self.prefix}leases"

    async def touch(self, connection_ids: Iterable[str], ttl: float) -> None:
        ids = list(connection_ids)
        if not ids:
            return
        milliseconds = max(1, int(ttl * 1000))
        # One command for a whole presence round (it was one SET per connection).
        await self.redis.batch().run(lambda pipe: pipe.eval(_TOUCH, 1, self._leases_key, milliseconds, *ids))

    async def vanish(self, connection_id: str) -> None:
        await self.redis.client().zrem(self._leases_key, connection_id)

    async def depart(self, departures: Sequence[tuple[str, Sequence[str]]]) -> None:
        if not departures:
            return
        async with self.redis.client().pipeline(transaction=False) as pipe:
            for connection_id, channels in departures:
                for channel in channels:
                    pipe.srem(self.prefix + channel, connection_id)
            pipe.delete(*(self._user_key(connection_id) for connection_id, _ in departures))
            pipe.zrem(self._leases_key, *(connection_id for connection_id, _ in departures))
            await pipe.execute()

    async def alive(self, connection_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(connection_ids))
        if not ids:
            return set()
        found = await self.redis.client().eval(_ALIVE, 1, self._leases_key, *ids)
        return {c.decode() if isinstance(c, bytes) else c for c in found}


def _build() -> Members:
    redis_url = conduit_settings.REDIS_URL
    return RedisMembers(url=redis_url) if redis_url else MemoryMembers()


#: ``get_members()``: the membership store, Redis when ``REDIS_URL`` is set, else memory.
get_members: BuiltOnUse[Members] = BuiltOnUse(
    lambda: (conduit_settings.REDIS_URL, conduit_settings.KEY_PREFIX), _build
)
