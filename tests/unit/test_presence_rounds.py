"""A presence round (``LocalConnections.renew``) renews every connection's lease but makes and
sends a record only for the connections that changed since their last one, or after
``RECORD_REFRESH`` seconds: an idle process no longer rebuilds and rewrites thousands of
unchanged records every round."""

from __future__ import annotations

import pytest

from hubs import presence, signals
from hubs.presence import RECORD_REFRESH, LocalConnections
from hubs.records import ConnectionRecord
from hubs.runtime import runtime


class Connection:
    """A registered connection as the presence loop sees it; counts the records made of it."""

    hub_class = object

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.messages_out = 0
        self.made = 0

    @property
    def hub_name(self) -> str:
        return "tasks"

    def record_version(self) -> int:
        return self.messages_out

    def monitor_record(self) -> ConnectionRecord:
        self.made += 1
        return ConnectionRecord(
            connection_id=self.connection_id, hub="tasks", server_id="s", messages_out=self.messages_out
        )


class Leases:
    def __init__(self) -> None:
        self.touched: list[list[str]] = []

    async def touch(self, connection_ids, ttl):
        self.touched.append(list(connection_ids))


@pytest.fixture
def rounds(fresh_delivery_stores):
    leases = Leases()
    runtime().swap_store("members", leases)
    seen: list[dict] = []

    async def receiver(sender, records, connections, ttl, **kwargs):
        seen.append({"records": [r.connection_id for r in records], "connections": dict(connections)})

    signals.connections_renewed.connect(receiver, weak=False, dispatch_uid="test.rounds")
    yield leases, seen
    signals.connections_renewed.disconnect(dispatch_uid="test.rounds")


async def test_only_changed_connections_get_a_new_record_and_every_lease_is_renewed(rounds, monkeypatch):
    leases, seen = rounds
    now = [1000.0]
    monkeypatch.setattr(presence.time, "monotonic", lambda: now[0])
    local = LocalConnections()
    connections = {f"c{n}": Connection(f"c{n}") for n in range(3)}
    for connection_id, connection in connections.items():
        local.connections[connection_id] = connection  # as register does, without its notice

    await local.renew()  # never reported: all three
    assert seen[-1]["records"] == ["c0", "c1", "c2"]
    connections["c1"].messages_out += 1
    await local.renew()
    assert seen[-1] == {"records": ["c1"], "connections": {"c0": "tasks", "c1": "tasks", "c2": "tasks"}}
    assert leases.touched[-1] == ["c0", "c1", "c2"]
    await local.renew()
    assert seen[-1]["records"] == []  # nothing changed: leases only
    assert [c.made for c in connections.values()] == [1, 2, 1]

    now[0] += RECORD_REFRESH  # unchanged for 5 minutes: sent again, in case the store lost it
    await local.renew()
    assert seen[-1]["records"] == ["c0", "c1", "c2"]
    local.forget("c0")
    await local.renew()
    assert seen[-1]["connections"] == {"c1": "tasks", "c2": "tasks"}
    assert "c0" not in local._reported
