"""The core's signals (``hubs.signals``), driven by real hub connections: what observers are sent
and when, and that a failing observer never stops a connection."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from conduit_rt.demo.hubs import TaskHub
from hubs import signals
from hubs.records import ConnectionRecord, ServerRecord
from hubs.runtime import local_connections
from monitoring.monitor import get_monitor

pytestmark = [pytest.mark.django_db(transaction=True)]


def errors(where: str) -> float:
    return REGISTRY.get_sample_value("conduit_errors_total", {"where": where}) or 0.0


@pytest.fixture
def seen():
    """What the signals carried, in order: ``(signal name, sender, arguments)``."""
    events: list[tuple[str, object, dict]] = []
    connected = []
    for name in (
        "connection_opened",
        "connection_changed",
        "connections_renewed",
        "connections_closed",
        "process_report",
    ):

        async def receiver(sender, _name=name, **kwargs):
            kwargs.pop("signal")
            events.append((_name, sender, kwargs))

        signal = getattr(signals, name)
        signal.connect(receiver, weak=False, dispatch_uid=f"test.{name}")
        connected.append((signal, name))
    yield events
    for signal, name in connected:
        signal.disconnect(dispatch_uid=f"test.{name}")


async def test_a_connections_life_reaches_observers_in_order(
    seen, fresh_delivery_stores, hub_client, alice_token, alice_task
):
    client = await hub_client("/hubs/tasks", token=alice_token)
    assert (await client.invoke("SubscribeToTask", str(alice_task.id))).error is None
    await local_connections().renew()
    await client.close()

    names = [name for name, _, _ in seen]
    assert names[:3] == ["connection_opened", "connection_changed", "connections_renewed"]
    assert "process_report" in names
    assert names.count("connections_closed") == 1
    closed = names.index("connections_closed")
    assert closed > 2

    _, sender, opened = seen[0]
    assert sender is TaskHub
    record = opened["record"]
    assert isinstance(record, ConnectionRecord)
    assert (record.hub, record.username) == ("tasks", "alice")
    assert opened["ttl"] > 0
    assert seen[1][2]["record"].groups == {f"task-{alice_task.id}": {"taskId": str(alice_task.id)}}
    assert [r.connection_id for r in seen[2][2]["records"]] == [record.connection_id]
    report = next(kwargs for name, _, kwargs in seen if name == "process_report")
    assert isinstance(report["server"], ServerRecord)
    assert report["server"].connections == 1
    assert seen[closed][2] == {"connections": [(record.connection_id, "tasks")]}


async def test_a_failing_observer_is_logged_and_counted_and_the_connection_serves_on(
    fresh_delivery_stores, hub_client, alice_token, caplog
):
    async def broken(sender, **kwargs):
        raise RuntimeError("observer down")

    signals.connection_opened.connect(broken, weak=False, dispatch_uid="test.broken")
    try:
        before = errors("observer")
        client = await hub_client("/hubs/tasks", token=alice_token)
        answer = await asyncio.wait_for(client.invoke("Ping"), 10)
        assert answer.error is None
        assert errors("observer") == before + 1
        assert "observer down" in caplog.text
        # The other receivers still ran: the monitoring app wrote the record.
        assert [r.hub for r in await get_monitor().connections()] == ["tasks"]
    finally:
        signals.connection_opened.disconnect(dispatch_uid="test.broken")
