"""Pending acknowledgements: one entry per (recipient connection, message), due at a wall time.

An acknowledged send registers an entry for every recipient connection *before* it publishes.
``ack`` removes one (idempotent; unknown ids are no error). The retry layer (Celery beat in
production, a loop in the embedded server) calls ``claim_due``: each due entry is leased (its due
time pushed ``lease`` seconds ahead) so that two workers never resend the same entry, and the
worker then either ``reschedule``s it with one more attempt or ``drop``s it as a dead letter.
A user's new connection ``adopt``s the entries of that user's connections that are gone (the
official clients reconnect with a new connection id).

Times are wall-clock seconds (``time.time``): several processes compare them. Two backends with one
contract: ``MemoryPending`` (embedded) and ``RedisPending`` (a sorted set of due times plus a hash
of attempts per connection, changed only by scripts so a claim and an ack never interleave badly).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ..conf import conduit_settings
from .built import BuiltOnUse
from .members import RESOLVE_ALIVE_FN, Members, RedisMembers
from .redis import PerLoopRedis

Recipients = Mapping[str, "str | None"] | Iterable[str]


def _owners(recipients: Recipients) -> dict[str, str | None]:
    """Recipients as connection id → user id (None: anonymous or unknown)."""
    if isinstance(recipients, Mapping):
        return dict(recipients)
    return dict.fromkeys(recipients)


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """A message one connection has not acknowledged yet; ``attempts`` counts resends so far."""

    connection_id: str
    message_id: str
    attempts: int
    due: float
    user_id: str | None = None


class Pending(Protocol):
    """The contract both backends keep."""

    async def register(self, message_id: str, recipients: Recipients, due: float) -> None:
        """One entry per recipient connection (a mapping also records each one's user)."""
        ...

    async def register_members(
        self, message_id: str, members: Members, channels: Sequence[str], exclude: Collection[str], due: float
    ) -> int:
        """``register`` for the live members of ``channels`` (``members.resolve_alive``) but those
        in ``exclude``; returns how many got an entry."""
        ...

    async def ack(self, connection_id: str, message_id: str) -> bool:
        """Clear the entry; True if it was pending."""
        ...

    async def ack_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """``ack`` for many (connection id, message id) pairs at once, in order."""
        ...

    async def expedite(self, connection_id: str, message_id: str, due: float) -> bool:
        """Make a pending entry due at ``due`` (a nack); False if it is not pending."""
        ...

    async def claim_due(self, now: float, limit: int, lease: float) -> list[PendingEntry]:
        """Up to ``limit`` entries due at ``now``, each leased until ``now + lease``."""
        ...

    async def reschedule(self, entry: PendingEntry, due: float) -> bool:
        """Count one more attempt and make it due at ``due``; False if it was acked meanwhile."""
        ...

    async def drop(self, entry: PendingEntry) -> None:
        """Forget the entry (it became a dead letter)."""
        ...

    async def for_connection(self, connection_id: str) -> list[PendingEntry]:
        """Everything ``connection_id`` still owes an ack for, oldest due first."""
        ...

    async def owing(self, user_id: str) -> set[str]:
        """The connections of ``user_id`` that had entries (some may have acknowledged them all
        since): what ``adopt`` would look at. One cheap read, so that a new connection of a user
        who owes nothing (the common case) checks no lease."""
        ...

    async def adopt(
        self, user_id: str, connection_id: str, live: Collection[str], due: float, max_attempts: int
    ) -> list[PendingEntry]:
        """Move the entries of ``user_id``'s connections that are not in ``live`` to
        ``connection_id``, due at ``due``, attempts capped at ``max_attempts``; returns them.
        Atomic: two new connections of one user never both take the same entry."""
        ...

    async def count(self) -> int:
        """How many entries are pending (all connections)."""
        ...


class MemoryPending:
    """Pending entries in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], PendingEntry] = {}
        self._users: dict[str, set[str]] = {}

    async def register(self, message_id: str, recipients: Recipients, due: float) -> None:
        with self._lock:
            for connection_id, user_id in _owners(recipients).items():
                self._entries[(connection_id, message_id)] = PendingEntry(
                    connection_id, message_id, 0, due, user_id
                )
                if user_id is not None:
                    self._users.setdefault(user_id, set()).add(connection_id)

    async def register_members(
        self, message_id: str, members: Members, channels: Sequence[str], exclude: Collection[str], due: float
    ) -> int:
        return await _register_members(self, message_id, members, channels, exclude, due)

    async def ack(self, connection_id: str, message_id: str) -> bool:
        with self._lock:
            return self._entries.pop((connection_id, message_id), None) is not None

    async def ack_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        with self._lock:
            return [self._entries.pop(pair, None) is not None for pair in pairs]

    async def expedite(self, connection_id: str, message_id: str, due: float) -> bool:
        with self._lock:
            current = self._entries.get((connection_id, message_id))
            if current is None:
                return False
            self._entries[(connection_id, message_id)] = replace(current, due=due)
            return True

    async def claim_due(self, now: float, limit: int, lease: float) -> list[PendingEntry]:
        with self._lock:
            due = sorted((e for e in self._entries.values() if e.due <= now), key=lambda e: e.due)[:limit]
            for entry in due:
                self._entries[(entry.connection_id, entry.message_id)] = replace(entry, due=now + lease)
            return due

    async def reschedule(self, entry: PendingEntry, due: float) -> bool:
        with self._lock:
            key = (entry.connection_id, entry.message_id)
            current = self._entries.get(key)
            if current is None:
                return False
            self._entries[key] = replace(current, attempts=current.attempts + 1, due=due)
            return True

    async def drop(self, entry: PendingEntry) -> None:
        with self._lock:
            self._entries.pop((entry.connection_id, entry.message_id), None)

    async def for_connection(self, connection_id: str) -> list[PendingEntry]:
        with self._lock:
            found = [e for (c, _), e in self._entries.items() if c == connection_id]
        return sorted(found, key=lambda e: e.due)

    async def owing(self, user_id: str) -> set[str]:
        with self._lock:
            return set(self._users.get(user_id, ()))

    async def adopt(
        self, user_id: str, connection_id: str, live: Collection[str], due: float, max_attempts: int
    ) -> list[PendingEntry]:
        moved: list[PendingEntry] = []
        with self._lock:
            connections = self._users.get(user_id, set())
            for old in sorted(connections):
                if old == connection_id or old in live:
                    continue
                connections.discard(old)
                for key in [k for k in self._entries if k[0] == old]:
                    entry = self._entries.pop(key)
                    if (connection_id, entry.message_id) in self._entries:
                        continue  # the new connection already has it
                    adopted = PendingEntry(
                        connection_id, entry.message_id, min(entry.attempts, max_attempts), due, user_id
                    )
                    self._entries[(connection_id, entry.message_id)] = adopted
                    moved.append(adopted)
            if moved:
                connections.add(connection_id)
        return moved

    async def count(self) -> int:
        with self._lock:
            return len(self._entries)


# KEYS: due zset. ARGV: now, limit, lease-until. Members are "<connection id>|<message id>"
# (connection ids are URL-safe base64, so "|" cannot occur in them).
_CLAIM = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #found, 2 do
  redis.call('ZADD', KEYS[1], ARGV[3], found[i])
  table.insert(out, found[i])
  table.insert(out, found[i + 1])
end
return out
"""

# A Lua function: one entry per (connection id, user id or false/"") pair of ``pairs`` from index
# ``first`` on, skipping the connections in ``skip``; returns how many were registered. The due
# zset gets its members in chunks (Lua's unpack takes a few thousand values at most).
_REGISTER_FN = """
local function register(due_key, prefix, message, due, ttl, pairs, first, skip)
  local members, count = {}, 0
  for i = first, #pairs, 2 do
    local connection, user = pairs[i], pairs[i + 1]
    if not skip[connection] then
      local hash = prefix .. 'c:' .. connection
      redis.call('HSET', hash, message, 0)
      redis.call('EXPIRE', hash, ttl)
      table.insert(members, due)
      table.insert(members, connection .. '|' .. message)
      count = count + 1
      if user and user ~= '' then
        redis.call('SET', prefix .. 'o:' .. connection, user, 'EX', ttl)
        redis.call('SADD', prefix .. 'u:' .. user, connection)
        redis.call('EXPIRE', prefix .. 'u:' .. user, ttl)
      end
      if #members >= 2000 then
        redis.call('ZADD', due_key, unpack(members))
        members = {}
      end
    end
  end
  if #members > 0 then redis.call('ZADD', due_key, unpack(members)) end
  return count
end
"""

# KEYS: due zset. ARGV: key prefix, message id, due, ttl, then (connection id, user id or "")
# pairs. One script instead of six commands per recipient.
_REGISTER = (
    _REGISTER_FN + "return register(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV, 5, {})\n"
)

# KEYS: due zset, then the member sets. ARGV: key prefix, members key prefix, message id, due,
# ttl, then the excluded connection ids. Resolves the live members and registers them: one
# round trip for an acknowledged send's recipients.
_REGISTER_ALIVE = (
    RESOLVE_ALIVE_FN
    + _REGISTER_FN
    + """
local sets, skip = {}, {}
for i = 2, #KEYS do table.insert(sets, KEYS[i]) end
for i = 6, #ARGV do skip[ARGV[i]] = true end
return register(KEYS[1], ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[5]),
                resolve_alive(sets, ARGV[2]), 1, skip)
"""
)

# KEYS: due zset. ARGV: key prefix, then (connection id, message id) pairs. Returns 1/0 per pair.
_ACK_MANY = """
local prefix, out = ARGV[1], {}
for i = 2, #ARGV, 2 do
  local removed = redis.call('HDEL', prefix .. 'c:' .. ARGV[i], ARGV[i + 1])
  redis.call('ZREM', KEYS[1], ARGV[i] .. '|' .. ARGV[i + 1])
  table.insert(out, removed)
end
return out
"""

# KEYS: due zset, attempts hash of the connection. ARGV: member, message id, new due.
_RESCHEDULE = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
local attempts = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return attempts
"""

# KEYS: due zset, attempts hash of the connection. ARGV: member, message id, new due.
_EXPEDITE = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""

# KEYS: due zset, the user's connection set, the new connection's attempts hash and owner key.
# ARGV: key prefix, new connection id, due, ttl, user id, max attempts, live connection ids...
# Keys of old connections are built in the script (single-node Redis, as channels-redis' own).
_ADOPT = """
local prefix, new, due, ttl, user = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local cap = tonumber(ARGV[6])
local live = {[new] = true}
for i = 7, #ARGV do live[ARGV[i]] = true end
local moved = {}
for _, old in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not live[old] then
    local hash = prefix .. 'c:' .. old
    local entries = redis.call('HGETALL', hash)
    for i = 1, #entries, 2 do
      local message, attempts = entries[i], math.min(tonumber(entries[i + 1]), cap)
      redis.call('ZREM', KEYS[1], old .. '|' .. message)
      if redis.call('HSETNX', KEYS[3], message, attempts) == 1 then
        redis.call('ZADD', KEYS[1], due, new .. '|' .. message)
        table.insert(moved, message)
        table.insert(moved, attempts)
      end
    end
    redis.call('DEL', hash, prefix .. 'o:' .. old)
    redis.call('SREM', KEYS[2], old)
  end
end
if #moved > 0 then
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('SET', KEYS[4], user, 'EX', ttl)
  redis.call('SADD', KEYS[2], new)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return moved
"""


class RedisPending:
    """Pending entries in Redis, under ``<KEY_PREFIX>:pending:``: ``due`` (every entry, sorted by
    due time), ``c:<connection>`` (message id → attempts), ``o:<connection>`` (its user) and
    ``u:<user>`` (connections of the user that had entries). Every key but ``due`` expires after
    ``ttl`` seconds without a new entry."""

    def __init__(self, *, url: str | None = None, ttl: float = 86400.0) -> None:
        self.url = url or conduit_settings.REDIS_URL
        if not self.url:
            raise ValueError("RedisPending needs CONDUIT_RT['REDIS_URL'].")
        self.ttl = ttl
        self.prefix = f"{conduit_settings.KEY_PREFIX}:pending:"
        self.redis = PerLoopRedis(self.url)

    @property
    def _due(self) -> str:
        return self.prefix + "due"

    def _attempts(self, connection_id: str) -> str:
        return f"{self.prefix}c:{connection_id}"

    def _owner(self, connection_id: str) -> str:
        return f"{self.prefix}o:{connection_id}"

    def _user(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    async def register(self, message_id: str, recipients: Recipients, due: float) -> None:
        owners = _owners(recipients)
        if not owners:
            return
        pairs = [
            value for connection_id, user_id in owners.items() for value in (connection_id, user_id or "")
        ]
        await self.redis.client().eval(
            _REGISTER, 1, self._due, self.prefix, message_id, repr(due), int(self.ttl), *pairs
        )

    async def register_members(
        self, message_id: str, members: Members, channels: Sequence[str], exclude: Collection[str], due: float
    ) -> int:
        if not isinstance(members, RedisMembers) or members.url != self.url:
            return await _register_members(self, message_id, members, channels, exclude, due)
        keys = members.set_keys(channels)
        if not keys:
            return 0
        return int(
            await self.redis.client().eval(
                _REGISTER_ALIVE,
                1 + len(keys),
                self._due,
                *keys,
                self.prefix,
                members.prefix,
                message_id,
                repr(due),
                int(self.ttl),
                *exclude,
            )
        )

    async def ack(self, connection_id: str, message_id: str) -> bool:
        (cleared,) = await self.ack_many([(connection_id, message_id)])
        return cleared

    async def ack_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        if not pairs:
            return []
        flat = [value for pair in pairs for value in pair]
        found = await self.redis.client().eval(_ACK_MANY, 1, self._due, self.prefix, *flat)
        return [bool(removed) for removed in found]

    async def expedite(self, connection_id: str, message_id: str, due: float) -> bool:
        member = f"{connection_id}|{message_id}"
        found = await self.redis.client().eval(
            _EXPEDITE, 2, self._due, self._attempts(connection_id), member, message_id, repr(due)
        )
        return bool(found)

    async def claim_due(self, now: float, limit: int, lease: float) -> list[PendingEntry]:
        client = self.redis.client()
        found = await client.eval(_CLAIM, 1, self._due, repr(now), int(limit), repr(now + lease))
        pairs = [(found[i].decode(), float(found[i + 1])) for i in range(0, len(found), 2)]
        if not pairs:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for member, _ in pairs:
                connection_id, message_id = member.split("|", 1)
                pipe.hget(self._attempts(connection_id), message_id)
                pipe.get(self._owner(connection_id))
            replies = await pipe.execute()
        entries = []
        gone = []
        for index, (member, due) in enumerate(pairs):
            count, owner = replies[2 * index], replies[2 * index + 1]
            connection_id, message_id = member.split("|", 1)
            if count is None:  # acked meanwhile, or its connection's hash expired: forget it
                gone.append(member)
                continue
            user_id = owner.decode() if owner is not None else None
            entries.append(PendingEntry(connection_id, message_id, int(count), due, user_id))
        if gone:
            await client.zrem(self._due, *gone)
        return entries

    async def reschedule(self, entry: PendingEntry, due: float) -> bool:
        member = f"{entry.connection_id}|{entry.message_id}"
        attempts = await self.redis.client().eval(
            _RESCHEDULE,
            2,
            self._due,
            self._attempts(entry.connection_id),
            member,
            entry.message_id,
            repr(due),
        )
        return bool(attempts)

    async def drop(self, entry: PendingEntry) -> None:
        await self.ack(entry.connection_id, entry.message_id)

    async def for_connection(self, connection_id: str) -> list[PendingEntry]:
        client = self.redis.client()
        attempts = await client.hgetall(self._attempts(connection_id))
        if not attempts:
            return []
        owner = await client.get(self._owner(connection_id))
        user_id = owner.decode() if owner is not None else None
        members = [f"{connection_id}|{m.decode()}" for m in attempts]
        scores = await client.zmscore(self._due, members)
        entries = [
            PendingEntry(connection_id, m.decode(), int(count), float(score), user_id)
            for (m, count), score in zip(attempts.items(), scores, strict=True)
            if score is not None
        ]
        return sorted(entries, key=lambda e: e.due)

    async def owing(self, user_id: str) -> set[str]:
        # In the round trip of the loop's other connects (``TickPipeline``).
        (found,) = await self.redis.batch().run(lambda pipe: pipe.smembers(self._user(user_id)))
        return {c.decode() if isinstance(c, bytes) else c for c in found}

    async def adopt(
        self, user_id: str, connection_id: str, live: Collection[str], due: float, max_attempts: int
    ) -> list[PendingEntry]:
        moved = await self.redis.client().eval(
            _ADOPT,
            4,
            self._due,
            self._user(user_id),
            self._attempts(connection_id),
            self._owner(connection_id),
            self.prefix,
            connection_id,
            repr(due),
            int(self.ttl),
            user_id,
            int(max_attempts),
            *live,
        )
        return [
            PendingEntry(connection_id, moved[i].decode(), int(moved[i + 1]), due, user_id)
            for i in range(0, len(moved), 2)
        ]

    async def count(self) -> int:
        return int(await self.redis.client().zcard(self._due))


async def _register_members(
    pending: Pending,
    message_id: str,
    members: Members,
    channels: Sequence[str],
    exclude: Collection[str],
    due: float,
) -> int:
    """``register_members`` in two steps (resolve, then register), for any pair of stores."""
    found = await members.resolve_alive(channels)
    recipients = {c: u for c, u in found.items() if c not in exclude}
    if recipients:
        await pending.register(message_id, recipients, due)
    return len(recipients)


def _build() -> Pending:
    redis_url = conduit_settings.REDIS_URL
    return RedisPending(url=redis_url) if redis_url else MemoryPending()


#: ``get_pending()``: the pending store, Redis when ``REDIS_URL`` is set, else this process's memory.
get_pending: BuiltOnUse[Pending] = BuiltOnUse(
    lambda: (conduit_settings.REDIS_URL, conduit_settings.KEY_PREFIX), _build
)
