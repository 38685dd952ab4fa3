"""Pending acknowledgements: one entry per (recipient connection, message), due at a wall time.

An acknowledged send registers an entry for every recipient connection *before* it publishes.
``ack`` removes one (idempotent; unknown ids are no error). The retry layer (Celery beat in
production, a loop in the embedded server) calls ``claim_due``: each due entry is leased (its due
time pushed ``lease`` seconds ahead) so that two workers never resend the same entry, and the
worker then either ``reschedule``s it with one more attempt or ``drop``s it as a dead letter.

Times are wall-clock seconds (``time.time``): several processes compare them. Two backends with one
contract: ``MemoryPending`` (embedded) and ``RedisPending`` (a sorted set of due times plus a hash
of attempts per connection, changed only by scripts so a claim and an ack never interleave badly).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..conf import conduit_settings
from .redis import PerLoopRedis


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """A message one connection has not acknowledged yet; ``attempts`` counts resends so far."""

    connection_id: str
    message_id: str
    attempts: int
    due: float


class Pending(Protocol):
    """The contract both backends keep."""

    async def register(self, message_id: str, connection_ids: Iterable[str], due: float) -> None: ...

    async def ack(self, connection_id: str, message_id: str) -> bool:
        """Clear the entry; True if it was pending."""
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


class MemoryPending:
    """Pending entries in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], PendingEntry] = {}

    async def register(self, message_id: str, connection_ids: Iterable[str], due: float) -> None:
        with self._lock:
            for connection_id in connection_ids:
                self._entries[(connection_id, message_id)] = PendingEntry(connection_id, message_id, 0, due)

    async def ack(self, connection_id: str, message_id: str) -> bool:
        with self._lock:
            return self._entries.pop((connection_id, message_id), None) is not None

    async def claim_due(self, now: float, limit: int, lease: float) -> list[PendingEntry]:
        with self._lock:
            due = sorted((e for e in self._entries.values() if e.due <= now), key=lambda e: e.due)[:limit]
            for entry in due:
                key = (entry.connection_id, entry.message_id)
                self._entries[key] = PendingEntry(
                    entry.connection_id, entry.message_id, entry.attempts, now + lease
                )
            return due

    async def reschedule(self, entry: PendingEntry, due: float) -> bool:
        with self._lock:
            key = (entry.connection_id, entry.message_id)
            current = self._entries.get(key)
            if current is None:
                return False
            self._entries[key] = PendingEntry(
                entry.connection_id, entry.message_id, current.attempts + 1, due
            )
            return True

    async def drop(self, entry: PendingEntry) -> None:
        with self._lock:
            self._entries.pop((entry.connection_id, entry.message_id), None)

    async def for_connection(self, connection_id: str) -> list[PendingEntry]:
        with self._lock:
            found = [e for (c, _), e in self._entries.items() if c == connection_id]
        return sorted(found, key=lambda e: e.due)


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

# KEYS: due zset, attempts hash of the connection. ARGV: member, message id, new due.
_RESCHEDULE = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
local attempts = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return attempts
"""


class RedisPending:
    """Pending entries in Redis: ``<prefix>:pending:due`` (sorted by due time) and
    ``<prefix>:pending:c:<connection id>`` (message id → attempts)."""

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

    async def register(self, message_id: str, connection_ids: Iterable[str], due: float) -> None:
        async with self.redis.client().pipeline(transaction=True) as pipe:
            for connection_id in connection_ids:
                pipe.hset(self._attempts(connection_id), message_id, 0)
                pipe.expire(self._attempts(connection_id), int(self.ttl))
                pipe.zadd(self._due, {f"{connection_id}|{message_id}": due})
            await pipe.execute()

    async def ack(self, connection_id: str, message_id: str) -> bool:
        async with self.redis.client().pipeline(transaction=True) as pipe:
            pipe.hdel(self._attempts(connection_id), message_id)
            pipe.zrem(self._due, f"{connection_id}|{message_id}")
            removed, _ = await pipe.execute()
        return bool(removed)

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
            attempts = await pipe.execute()
        entries = []
        for (member, due), count in zip(pairs, attempts, strict=True):
            connection_id, message_id = member.split("|", 1)
            if count is None:  # acked between the claim and this read
                continue
            entries.append(PendingEntry(connection_id, message_id, int(count), due))
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
        members = [f"{connection_id}|{m.decode()}" for m in attempts]
        scores = await client.zmscore(self._due, members)
        entries = [
            PendingEntry(connection_id, m.decode(), int(count), float(score))
            for (m, count), score in zip(attempts.items(), scores, strict=True)
            if score is not None
        ]
        return sorted(entries, key=lambda e: e.due)
