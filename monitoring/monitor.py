"""The connection monitor: who is connected to which hub and group, shared by every process.

Each serving process writes the records of its own connections (``upsert``) when they open, when
they join or leave a group, and every ``PRESENCE_TTL / 3`` seconds together with their presence
leases (``hubs.presence``); it removes them when they close. Every write renews the record's
lease for ``PRESENCE_TTL`` seconds, so the connections of a process that died stop counting as
active on their own; the stale cleanup (``monitoring.cleanup``) then removes what they left.

Two backends with one contract: ``MemoryMonitor`` (the embedded mode: one process) and
``RedisMonitor`` (Redis, shared by every process and host). Redis layout, under
``<KEY_PREFIX>:monitor:``:

- ``conn:<id>``: the record (JSON), kept a day after its last write, so the cleanup can still
  read what a dead process's connection held;
- ``leases:<hub>``: sorted set, connection id → lease expiry; ``activity:<hub>``: connection id
  → last activity; ``hubs``: the hub names;
- ``servers``: sorted set, server id → record expiry; ``server:<id>``: the process record;
- ``minute:<n>``: hash of messages delivered and failed in minute ``n`` (two hours).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from hubs.conf import conduit_settings
from hubs.delivery.built import BuiltOnUse
from hubs.delivery.redis import PerLoopRedis
from hubs.records import ConnectionRecord, ServerRecord
from hubs.tally import tally

from .records import HubSummary, MinuteCounts, MonitorSummary

#: A dead process's records are kept this long for the cleanup (seconds).
RECORD_RETENTION = 86400
#: Per-minute counts are kept this long (seconds): the dashboard shows the last hour.
MINUTE_RETENTION = 7200


class Monitor(Protocol):
    """The contract both backends keep. ``now`` defaults to the backend's clock."""

    async def upsert(self, records: Sequence[ConnectionRecord], ttl: float) -> None:
        """Write ``records`` and renew their leases for ``ttl`` seconds."""
        ...

    async def renew(
        self, records: Sequence[ConnectionRecord], connections: Mapping[str, str], ttl: float
    ) -> None:
        """A presence round: write ``records`` (those that changed) and renew the lease of each
        of ``connections`` (connection id to hub, all the process's) for ``ttl`` seconds."""
        ...

    async def remove(self, connection_id: str, hub: str) -> None:
        """Forget a connection (it closed, or the cleanup removed it)."""
        ...

    async def remove_many(self, connections: Sequence[tuple[str, str]]) -> None:
        """Forget several connections, ``(connection_id, hub)`` pairs, at once."""
        ...

    async def get(self, connection_id: str) -> ConnectionRecord | None:
        """One connection's record (live or expired), or None."""
        ...

    async def connections(self, hub: str | None = None) -> list[ConnectionRecord]:
        """The active connections (lease holds), of one hub or all, oldest first."""
        ...

    async def expired(self, limit: int = 1000) -> list[ConnectionRecord]:
        """Connections whose lease ran out and that were not removed (their process died)."""
        ...

    async def idle(self, threshold: float, limit: int = 1000) -> list[ConnectionRecord]:
        """Active connections with no hub message for ``threshold`` seconds."""
        ...

    async def summary(self) -> MonitorSummary:
        """Active, stale and group counts per hub."""
        ...

    async def server_heartbeat(self, server: ServerRecord, ttl: float) -> None:
        """Write a serving process's record, valid for ``ttl`` seconds."""
        ...

    async def servers(self) -> list[ServerRecord]:
        """The serving processes that reported within their ttl."""
        ...

    async def count_minute(self, delivered: int, failed: int) -> None:
        """Add to the current minute's delivered and failed counts."""
        ...

    async def minutes(self, count: int = 60) -> list[MinuteCounts]:
        """The last ``count`` minutes, oldest first, the current one last (zeros included)."""
        ...


def _stale_threshold() -> float:
    return float(conduit_settings.STALE_THRESHOLD)


def _summarize(
    hubs: Iterable[str], records: Iterable[ConnectionRecord], now: float, threshold: float
) -> MonitorSummary:
    summary = MonitorSummary(hubs={name: HubSummary() for name in hubs})
    groups: dict[str, set[str]] = {}
    for record in records:
        hub = summary.hubs.setdefault(record.hub, HubSummary())
        if not record.is_alive(now):
            hub.expired += 1
            hub.stale += 1
            continue
        hub.active += 1
        if record.idle_for(now) >= threshold:
            hub.idle += 1
            hub.stale += 1
        groups.setdefault(record.hub, set()).update(record.groups)
    for name, found in groups.items():
        summary.hubs[name].groups = len(found)
    return summary


def _minute_list(found: dict[int, tuple[int, int]], now: float, count: int) -> list[MinuteCounts]:
    current = int(now // 60)
    return [
        MinuteCounts(start=m * 60.0, delivered=found.get(m, (0, 0))[0], failed=found.get(m, (0, 0))[1])
        for m in range(current - count + 1, current + 1)
    ]


class MemoryMonitor:
    """The monitor in this process's memory (the embedded mode)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, ConnectionRecord] = {}
        self._hubs: set[str] = set()
        self._servers: dict[str, tuple[ServerRecord, float]] = {}
        self._minutes: dict[int, tuple[int, int]] = {}

    async def upsert(self, records: Sequence[ConnectionRecord], ttl: float) -> None:
        until = self.clock() + ttl
        with self._lock:
            for record in records:
                self._records[record.connection_id] = ConnectionRecord.loads(record.dumps(), until)
                self._hubs.add(record.hub)

    async def renew(
        self, records: Sequence[ConnectionRecord], connections: Mapping[str, str], ttl: float
    ) -> None:
        await self.upsert(records, ttl)
        until = self.clock() + ttl
        with self._lock:
            for connection_id in connections:
                known = self._records.get(connection_id)
                if known is not None:
                    known.lease_until = until

    async def remove(self, connection_id: str, hub: str) -> None:
        await self.remove_many([(connection_id, hub)])

    async def remove_many(self, connections: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            for connection_id, _ in connections:
                self._records.pop(connection_id, None)

    async def get(self, connection_id: str) -> ConnectionRecord | None:
        with self._lock:
            return self._records.get(connection_id)

    def _all(self) -> list[ConnectionRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.connected_at)

    async def connections(self, hub: str | None = None) -> list[ConnectionRecord]:
        now = self.clock()
        return [r for r in self._all() if r.is_alive(now) and (hub is None or r.hub == hub)]

    async def expired(self, limit: int = 1000) -> list[ConnectionRecord]:
        now = self.clock()
        return [r for r in self._all() if not r.is_alive(now)][:limit]

    async def idle(self, threshold: float, limit: int = 1000) -> list[ConnectionRecord]:
        now = self.clock()
        return [r for r in self._all() if r.is_alive(now) and r.idle_for(now) >= threshold][:limit]

    async def summary(self) -> MonitorSummary:
        with self._lock:
            hubs = set(self._hubs)
        return _summarize(hubs, self._all(), self.clock(), _stale_threshold())

    async def server_heartbeat(self, server: ServerRecord, ttl: float) -> None:
        with self._lock:
            self._servers[server.server_id] = (ServerRecord.loads(server.dumps()), self.clock() + ttl)

    async def servers(self) -> list[ServerRecord]:
        now = self.clock()
        with self._lock:
            for server_id in [s for s, (_, until) in self._servers.items() if until <= now]:
                del self._servers[server_id]
            return sorted((r for r, _ in self._servers.values()), key=lambda r: r.server_id)

    async def count_minute(self, delivered: int, failed: int) -> None:
        minute = int(self.clock() // 60)
        with self._lock:
            old = self._minutes.get(minute, (0, 0))
            self._minutes[minute] = (old[0] + delivered, old[1] + failed)
            oldest = minute - MINUTE_RETENTION // 60
            for stale in [m for m in self._minutes if m < oldest]:
                del self._minutes[stale]

    async def minutes(self, count: int = 60) -> list[MinuteCounts]:
        with self._lock:
            found = dict(self._minutes)
        return _minute_list(found, self.clock(), count)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisMonitor:
    """The monitor in Redis: every process and host sees the same connections.

    A presence round (``renew``) writes the records that changed and renews the leases of all
    the process's connections in one command per hub, so thousands of idle connections cost a
    few commands per round, not three each.
    """

    def __init__(self, *, url: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.url = url or conduit_settings.REDIS_URL
        if not self.url:
            raise ValueError("RedisMonitor needs CONDUIT_RT['REDIS_URL'].")
        self.prefix = f"{conduit_settings.KEY_PREFIX}:monitor:"
        self.clock = clock
        self.redis = PerLoopRedis(self.url)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def upsert(self, records: Sequence[ConnectionRecord], ttl: float) -> None:
        await self.renew(records, {r.connection_id: r.hub for r in records}, ttl)

    async def renew(
        self, records: Sequence[ConnectionRecord], connections: Mapping[str, str], ttl: float
    ) -> None:
        if not records and not connections:
            return
        until = self.clock() + ttl
        leases: dict[str, dict[str, float]] = {}
        activity: dict[str, dict[str, float]] = {}
        for connection_id, hub in connections.items():
            leases.setdefault(hub, {})[connection_id] = until
        written = [(self._key("conn", record.connection_id), record.dumps()) for record in records]
        for record in records:
            activity.setdefault(record.hub, {})[record.connection_id] = record.last_activity
            leases.setdefault(record.hub, {})[record.connection_id] = until

        def build(pipe: Any) -> None:
            for key, raw in written:
                pipe.set(key, raw, ex=RECORD_RETENTION)
            for hub in leases.keys() | activity.keys():
                pipe.sadd(self._key("hubs"), hub)
                if hub in leases:
                    pipe.zadd(self._key("leases", hub), leases[hub])
                if hub in activity:
                    pipe.zadd(self._key("activity", hub), activity[hub])

        # With the records of the other connections that open in the same loop iteration.
        await self.redis.batch().run(build)

    async def remove(self, connection_id: str, hub: str) -> None:
        await self.remove_many([(connection_id, hub)])

    async def remove_many(self, connections: Sequence[tuple[str, str]]) -> None:
        if not connections:
            return
        by_hub: dict[str, list[str]] = {}
        for connection_id, hub in connections:
            by_hub.setdefault(hub, []).append(connection_id)
        async with self.redis.client().pipeline(transaction=False) as pipe:
            pipe.delete(*(self._key("conn", connection_id) for connection_id, _ in connections))
            for hub, ids in by_hub.items():
                pipe.zrem(self._key("leases", hub), *ids)
                pipe.zrem(self._key("activity", hub), *ids)
            await pipe.execute()

    async def get(self, connection_id: str) -> ConnectionRecord | None:
        client = self.redis.client()
        raw = await client.get(self._key("conn", connection_id))
        if raw is None:
            return None
        record = ConnectionRecord.loads(raw)
        score = await client.zscore(self._key("leases", record.hub), connection_id)
        record.lease_until = float(score or 0.0)
        return record

    async def _hubs(self) -> list[str]:
        return sorted(_text(h) for h in await self.redis.client().smembers(self._key("hubs")))

    async def _load(self, hub: str, leases: list[tuple[bytes | str, float]]) -> list[ConnectionRecord]:
        """The records of ``(connection id, lease)`` pairs; ids whose record is gone are dropped
        from the hub's indexes."""
        if not leases:
            return []
        client = self.redis.client()
        ids = [_text(member) for member, _ in leases]
        raws = await client.mget([self._key("conn", c) for c in ids])
        found: list[ConnectionRecord] = []
        missing: list[str] = []
        for connection_id, (_, lease), raw in zip(ids, leases, raws, strict=True):
            if raw is None:
                missing.append(connection_id)
            else:
                found.append(ConnectionRecord.loads(raw, float(lease)))
        if missing:
            async with client.pipeline(transaction=False) as pipe:
                pipe.zrem(self._key("leases", hub), *missing)
                pipe.zrem(self._key("activity", hub), *missing)
                await pipe.execute()
        return found

    async def _by_lease(
        self, hub: str, low: float | str, high: float | str, limit: int | None = None
    ) -> list[tuple[bytes | str, float]]:
        """``(connection id, lease expiry)`` of ``hub``'s connections with a lease in the range."""
        return await self.redis.client().zrangebyscore(
            self._key("leases", hub), low, high, withscores=True, start=0 if limit else None, num=limit
        )

    async def connections(self, hub: str | None = None) -> list[ConnectionRecord]:
        now = self.clock()
        found: list[ConnectionRecord] = []
        for name in [hub] if hub else await self._hubs():
            found += await self._load(name, await self._by_lease(name, f"({now}", "+inf"))
        return sorted(found, key=lambda r: r.connected_at)

    async def expired(self, limit: int = 1000) -> list[ConnectionRecord]:
        now = self.clock()
        found: list[ConnectionRecord] = []
        for name in await self._hubs():
            if len(found) >= limit:
                break
            leases = await self._by_lease(name, "-inf", now, limit - len(found))
            found += await self._load(name, leases)
        return found

    async def idle(self, threshold: float, limit: int = 1000) -> list[ConnectionRecord]:
        now = self.clock()
        client = self.redis.client()
        found: list[ConnectionRecord] = []
        for name in await self._hubs():
            if len(found) >= limit:
                break
            ids = await client.zrangebyscore(
                self._key("activity", name), "-inf", now - threshold, start=0, num=limit - len(found)
            )
            if not ids:
                continue
            scores = await client.zmscore(self._key("leases", name), ids)
            leases = [(i, s) for i, s in zip(ids, scores, strict=True) if s is not None and s > now]
            found += await self._load(name, leases)
        return found

    async def summary(self) -> MonitorSummary:
        now = self.clock()
        hubs = await self._hubs()
        records: list[ConnectionRecord] = []
        for name in hubs:
            records += await self._load(name, await self._by_lease(name, "-inf", "+inf"))
        return _summarize(hubs, records, now, _stale_threshold())

    async def server_heartbeat(self, server: ServerRecord, ttl: float) -> None:
        async with self.redis.client().pipeline(transaction=False) as pipe:
            pipe.set(self._key("server", server.server_id), server.dumps(), px=max(1, int(ttl * 1000)))
            pipe.zadd(self._key("servers"), {server.server_id: self.clock() + ttl})
            await pipe.execute()

    async def servers(self) -> list[ServerRecord]:
        client = self.redis.client()
        now = self.clock()
        await client.zremrangebyscore(self._key("servers"), "-inf", now)
        ids = sorted(_text(s) for s in await client.zrange(self._key("servers"), 0, -1))
        if not ids:
            return []
        raws = await client.mget([self._key("server", s) for s in ids])
        return [ServerRecord.loads(raw) for raw in raws if raw is not None]

    async def count_minute(self, delivered: int, failed: int) -> None:
        if not delivered and not failed:
            return
        key = self._key("minute", str(int(self.clock() // 60)))
        async with self.redis.client().pipeline(transaction=False) as pipe:
            if delivered:
                pipe.hincrby(key, "delivered", delivered)
            if failed:
                pipe.hincrby(key, "failed", failed)
            pipe.expire(key, MINUTE_RETENTION)
            await pipe.execute()

    async def minutes(self, count: int = 60) -> list[MinuteCounts]:
        now = self.clock()
        current = int(now // 60)
        wanted = list(range(current - count + 1, current + 1))
        async with self.redis.client().pipeline(transaction=False) as pipe:
            for minute in wanted:
                pipe.hmget(self._key("minute", str(minute)), "delivered", "failed")
            rows = await pipe.execute()
        found = {
            minute: (int(delivered or 0), int(failed or 0))
            for minute, (delivered, failed) in zip(wanted, rows, strict=True)
        }
        return _minute_list(found, now, count)


async def flush_tally() -> None:
    """Hand this process's delivered and failed counts to the per-minute figures. On failure the
    counts go back to the tally for the next flush, and the error propagates."""
    delivered, failed = tally().take()
    try:
        await get_monitor().count_minute(delivered, failed)
    except BaseException:
        tally().add_delivered(delivered)
        tally().add_failed(failed)
        raise


def _build() -> Monitor:
    redis_url = conduit_settings.REDIS_URL
    return RedisMonitor(url=redis_url) if redis_url else MemoryMonitor()


#: ``get_monitor()``: the connection monitor, Redis when ``REDIS_URL`` is set, else memory.
get_monitor: BuiltOnUse[Monitor] = BuiltOnUse(
    lambda: (conduit_settings.REDIS_URL, conduit_settings.KEY_PREFIX), _build
)
