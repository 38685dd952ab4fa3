"""The connection monitor, the stale cleanup and /metrics, driven by real hub connections
(Channels' communicator), on the memory and the Redis backends."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from prometheus_client import REGISTRY

from hubs.delivery.members import get_members
from hubs.naming import connection_channel, group_channel
from hubs.protocol import CloseMessage
from hubs.records import ConnectionRecord
from hubs.runtime import local_connections
from hubs.send import get_hub_context
from monitoring.cleanup import CleanupResult, cleanup_stale, idle_close_error
from monitoring.monitor import get_monitor
from tests.support.delivery import delivery_settings

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=["memory", "redis"])
async def stores(request, fresh_delivery_stores):
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with delivery_settings(redis_url) as conf:
        yield conf


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def connection_id_of(client) -> str:
    """The id the monitor knows a fresh TaskHub connection by (the only one of its test)."""
    await settled(client)
    (record,) = await get_monitor().connections("tasks")
    return record.connection_id


async def settled(client) -> None:
    """Wait until the server finished opening the connection: it handles frames in order, so an
    invocation completes only after the handshake's group joins and monitor record."""
    assert (await client.invoke("Ping")).error is None


async def test_a_connection_is_in_the_monitor_with_its_facts_until_it_closes(
    stores, hub_client, alice_token, alice_task
):
    before = time.time()
    client = await hub_client(
        "/hubs/tasks", token=alice_token, protocol="messagepack", headers=[(b"user-agent", b"pytest/1")]
    )
    await settled(client)
    (record,) = await get_monitor().connections()
    assert record.hub == "tasks"
    assert (record.username, record.protocol, record.user_agent) == ("alice", "messagepack", "pytest/1")
    assert before <= record.connected_at <= time.time()
    assert record.groups == {}

    assert (await client.invoke("SubscribeToTask", str(alice_task.id))).error is None
    assert (await client.invoke("Ping", 42.5)).error is None
    await (
        get_hub_context("conduit_rt.demo.hubs.TaskHub")
        .clients.group(f"task-{alice_task.id}")
        .asend("TaskProgress", {"taskId": str(alice_task.id), "progressPercentage": 10})
    )
    assert (await client.next_event()).target == "TaskProgress"
    await local_connections().renew()  # what the presence loop does every PRESENCE_TTL / 3

    record = await get_monitor().get(record.connection_id)
    assert record is not None
    assert record.groups == {f"task-{alice_task.id}": {"taskId": str(alice_task.id)}}
    assert record.messages_in == 3  # three invocations; pings do not count
    assert record.messages_out == 4  # three completions and the event
    assert record.ping_latency_ms == 42.5
    assert record.last_activity >= record.connected_at
    assert group_channel("tasks", f"task-{alice_task.id}") in record.channels
    assert connection_channel(record.connection_id) in record.channels

    await client.close()
    assert await get_monitor().connections() == []
    assert await get_monitor().get(record.connection_id) is None


async def test_ping_rejects_a_latency_that_is_not_a_number(stores, hub_client, alice_token):
    client = await hub_client("/hubs/tasks", token=alice_token)
    for bad in ("fast", -1, True, 10**9):
        assert "latencyMs must be a number" in (await client.invoke("Ping", bad)).error


async def test_cleanup_closes_an_idle_connection_and_its_state_goes(stores, hub_client, alice_token):
    client = await hub_client("/hubs/tasks", token=alice_token)
    connection_id = await connection_id_of(client)
    closed_before = sample("conduit_stale_connections_cleaned_total", hub="tasks", reason="idle")

    assert await cleanup_stale(threshold=3600) == CleanupResult()  # nothing idle for an hour
    result = await cleanup_stale(threshold=0)
    assert (result.idle, result.expired) == (1, 0)

    close = await client.receive_skipping_pings()
    assert isinstance(close, CloseMessage)
    assert close.error == idle_close_error(0)
    assert not close.allow_reconnect
    frame = await client.communicator.receive_output(timeout=3)
    assert frame["type"] == "websocket.close"
    await client.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await client.communicator.wait(timeout=3)

    assert await get_monitor().connections() == []
    assert await get_members().alive([connection_id]) == set()
    assert sample("conduit_stale_connections_cleaned_total", hub="tasks", reason="idle") == closed_before + 1


async def test_cleanup_removes_what_a_dead_process_left(stores):
    """A process that died left a record, memberships and a lease: once the lease runs out, the
    cleanup removes all of them (and never sends anything: the socket died with the process)."""
    members = get_members()
    channels = [connection_channel("dead1"), "conduit.g.tasks.task-1"]
    await members.add("dead1", channels, user_id="7")
    await members.touch(["dead1"], 0.05)
    record = ConnectionRecord(
        connection_id="dead1", hub="tasks", server_id="gone:1:x", user_id="7", channels=channels
    )
    await get_monitor().upsert([record], ttl=0.05)
    assert [r.connection_id for r in await get_monitor().connections()] == ["dead1"]
    expired_before = sample("conduit_stale_connections_cleaned_total", hub="tasks", reason="expired")

    deadline = time.monotonic() + 5
    while await get_monitor().connections():  # the lease is wall-clock: 50 ms
        assert time.monotonic() < deadline, "the lease never expired"
        await sync_to_async(time.sleep)(0.02)
    assert (await get_monitor().summary()).stale == 1

    result = await cleanup_stale(threshold=3600)
    assert (result.expired, result.idle) == (1, 0)
    assert await get_monitor().get("dead1") is None
    assert await members.members(channels) == set()
    assert await members.resolve(channels) == {}
    assert (await get_monitor().summary()).stale == 0
    assert (
        sample("conduit_stale_connections_cleaned_total", hub="tasks", reason="expired") == expired_before + 1
    )


async def scrape() -> dict[str, float]:
    """``GET /metrics`` → {"name{labels}": value} of the conduit_ samples."""
    response = await AsyncClient().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found: dict[str, float] = {}
    for line in response.content.decode().splitlines():
        if line.startswith("conduit_"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def test_metrics_show_connections_deliveries_and_return_to_zero(
    stores, hub_client, alice_token, alice_task
):
    # Before any connection, every routed hub reads 0 (a series, not a gap in the data).
    found = await scrape()
    assert found['conduit_active_connections{hub="tasks"}'] == 0
    assert found['conduit_active_connections{hub="video-generation"}'] == 0
    client = await hub_client("/hubs/tasks", token=alice_token)
    assert (await client.invoke("SubscribeToTask", str(alice_task.id))).error is None
    delivered = 'conduit_messages_delivered_total{hub="tasks",method="TaskProgress"}'
    before = (await scrape()).get(delivered, 0.0)
    await (
        get_hub_context("conduit_rt.demo.hubs.TaskHub")
        .clients.group(f"task-{alice_task.id}")
        .asend("TaskProgress", {"taskId": str(alice_task.id), "progressPercentage": 10})
    )
    await client.next_event()
    found = await scrape()
    assert found['conduit_active_connections{hub="tasks"}'] == 1
    assert found['conduit_groups{hub="tasks"}'] == 1
    assert found["conduit_monitor_up"] == 1
    assert found[delivered] == before + 1
    assert found['conduit_message_delivery_duration_seconds_count{hub="tasks"}'] >= 1
    assert found['conduit_breaker_state{state="closed"}'] >= 1
    assert found["conduit_pending_acks"] == 0

    await client.close()
    found = await scrape()
    assert found['conduit_active_connections{hub="tasks"}'] == 0
    assert found['conduit_groups{hub="tasks"}'] == 0
