"""The connection monitor: one contract, two backends (memory, real Redis), on an explicit clock."""

from __future__ import annotations

import pytest
from django.test import override_settings

from hubs.records import ConnectionRecord, ServerRecord
from monitoring.monitor import MemoryMonitor, RedisMonitor


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
def monitor(request, clock):
    if request.param == "memory":
        return MemoryMonitor(clock=clock)
    return request.getfixturevalue("redis_backend")(RedisMonitor, clock=clock)


def record(connection_id: str, hub: str = "tasks", **fields) -> ConnectionRecord:
    defaults = {"server_id": "h:1:a", "connected_at": 1_800_000_000.0, "last_activity": 1_800_000_000.0}
    return ConnectionRecord(connection_id=connection_id, hub=hub, **{**defaults, **fields})


async def test_records_round_trip_with_their_lease(monitor, clock):
    sent = record(
        "c1",
        user_id="7",
        username="alice",
        remote_address="127.0.0.1",
        protocol="messagepack",
        user_agent="Microsoft SignalR/10.0",
        messages_in=3,
        messages_out=5,
        ping_latency_ms=12.5,
        groups={"task-1": {"role": "owner"}},
        channels=["conduit.c.c1", "conduit.g.tasks.task-1"],
    )
    await monitor.upsert([sent], ttl=30)
    got = await monitor.get("c1")
    assert got is not None
    assert got.lease_until == clock.now + 30
    got.lease_until = 0.0
    assert got == sent
    assert await monitor.get("nobody") is None


async def test_active_connections_are_those_whose_lease_holds(monitor, clock):
    await monitor.upsert([record("c1"), record("c2", hub="video")], ttl=30)
    clock.now += 10
    await monitor.upsert([record("c2", hub="video")], ttl=30)  # c2's process renewed it
    assert [r.connection_id for r in await monitor.connections()] == ["c1", "c2"]
    assert [r.connection_id for r in await monitor.connections("video")] == ["c2"]
    clock.now += 25  # c1's lease (t+30) ran out, c2's (t+40) holds
    assert [r.connection_id for r in await monitor.connections()] == ["c2"]
    assert [r.connection_id for r in await monitor.expired()] == ["c1"]
    await monitor.remove("c1", "tasks")
    assert await monitor.expired() == []
    assert await monitor.get("c1") is None


async def test_remove_many_forgets_records_of_several_hubs_at_once(monitor, clock):
    await monitor.upsert([record("c1"), record("c2", hub="video"), record("c3")], ttl=30)
    await monitor.remove_many([("c1", "tasks"), ("c2", "video"), ("c9", "tasks")])
    assert [r.connection_id for r in await monitor.connections()] == ["c3"]
    clock.now += 31
    assert [r.connection_id for r in await monitor.expired()] == ["c3"]  # no lease left behind
    await monitor.remove_many([])


async def test_idle_connections_and_the_summary(monitor, clock):
    base = clock.now
    await monitor.upsert(
        [
            record("c1", last_activity=base - 100, groups={"a": {}, "b": {}}),
            record("c2", last_activity=base - 5, groups={"b": {}}),
            record("c3", hub="video", last_activity=base - 100),
        ],
        ttl=30,
    )
    with override_settings(CONDUIT_RT={"STALE_THRESHOLD": 60.0}):
        assert sorted(r.connection_id for r in await monitor.idle(60)) == ["c1", "c3"]
        summary = await monitor.summary()
    assert summary.active_by_hub == {"tasks": 2, "video": 1}
    assert summary.groups_by_hub == {"tasks": 2, "video": 0}
    assert (summary.active, summary.stale) == (3, 2)
    clock.now += 31  # every lease ran out: nothing active, all stale until cleaned up
    with override_settings(CONDUIT_RT={"STALE_THRESHOLD": 60.0}):
        summary = await monitor.summary()
        assert await monitor.idle(60) == []  # idle means alive and idle
    assert (summary.active, summary.stale, summary.groups) == (0, 3, 0)
    for r in await monitor.expired():
        await monitor.remove(r.connection_id, r.hub)
    summary = await monitor.summary()
    assert summary.active_by_hub == {"tasks": 0, "video": 0}  # known hubs read 0, not vanish
    assert summary.stale == 0


async def test_servers_report_until_their_ttl_passes(monitor, clock):
    server = ServerRecord("h:1:a", "h", 1, started_at=clock.now, last_seen=clock.now, breaker_state="open")
    await monitor.server_heartbeat(server, ttl=30)
    await monitor.server_heartbeat(ServerRecord("h:2:b", "h", 2, clock.now, clock.now, connections=4), ttl=5)
    assert [(s.server_id, s.breaker_state) for s in await monitor.servers()] == [
        ("h:1:a", "open"),
        ("h:2:b", "closed"),
    ]
    clock.now += 6
    assert [s.server_id for s in await monitor.servers()] == ["h:1:a"]


async def test_minutes_count_delivered_and_failed(monitor, clock):
    clock.now = 60 * 30_000_000 + 10  # 10 s into a minute
    await monitor.count_minute(5, 1)
    await monitor.count_minute(2, 0)
    clock.now += 60
    await monitor.count_minute(0, 3)
    await monitor.count_minute(0, 0)
    minutes = await monitor.minutes(3)
    assert [(m.delivered, m.failed) for m in minutes] == [(0, 0), (7, 1), (0, 3)]
    assert [m.start for m in minutes] == [60 * 29_999_999, 60 * 30_000_000, 60 * 30_000_001]


async def test_a_round_writes_the_records_it_is_given_and_renews_every_lease(monitor, clock):
    await monitor.upsert([record("c1"), record("c2", hub="video")], ttl=30)
    clock.now += 20
    # The presence round sends only the records that changed, and every connection's lease.
    await monitor.renew([record("c2", hub="video", messages_out=3)], {"c1": "tasks", "c2": "video"}, ttl=30)
    assert (await monitor.get("c2")).messages_out == 3
    assert (await monitor.get("c1")).messages_out == 0  # not sent: kept as it was
    clock.now += 25  # past the first lease: the round renewed both
    assert [r.connection_id for r in await monitor.connections()] == ["c1", "c2"]
    await monitor.renew([], {"c1": "tasks"}, ttl=30)
    clock.now += 25
    assert [r.connection_id for r in await monitor.connections()] == ["c1"]  # c2 was not renewed
