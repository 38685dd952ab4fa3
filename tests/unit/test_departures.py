"""Closing connections depart in batches (``LocalConnections.depart``): those that close while a
batch is written go in the next one, each batch one call of the registry and one notice."""

from __future__ import annotations

import asyncio

import pytest

from hubs import signals
from hubs.presence import LocalConnections
from hubs.runtime import runtime


class Registry:
    """The registry's ``depart``, recording its batches; the first one waits for ``release``."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, list[str]]]] = []
        self.release = asyncio.Event()

    async def depart(self, departures):
        self.batches.append([(c, list(ch)) for c, ch in departures])
        if len(self.batches) == 1:
            await self.release.wait()


@pytest.fixture
def registry(fresh_delivery_stores):
    found = Registry()
    runtime().swap_store("members", found)
    return found


@pytest.fixture
def notices():
    seen: list[list[tuple[str, str]]] = []

    async def receiver(sender, connections, **kwargs):
        seen.append(list(connections))

    signals.connections_closed.connect(receiver, weak=False, dispatch_uid="test.departures")
    yield seen
    signals.connections_closed.disconnect(dispatch_uid="test.departures")


async def test_a_storm_of_departures_is_written_in_a_few_batches(registry, notices):
    connections = LocalConnections()
    first = asyncio.ensure_future(connections.depart("c0", "tasks", ["ch.c0"]))
    await asyncio.sleep(0)  # the first batch is being written (it waits for release)
    rest = [asyncio.ensure_future(connections.depart(f"c{i}", "tasks", [f"ch.c{i}"])) for i in range(1, 601)]
    await asyncio.sleep(0)
    assert not first.done() and not any(t.done() for t in rest)
    registry.release.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), timeout=5)
    # The first alone; the 600 that came while it was written in batches of at most 500.
    assert [len(b) for b in registry.batches] == [1, 500, 100]
    assert registry.batches[1][0] == ("c1", ["ch.c1"])
    assert [len(n) for n in notices] == [1, 500, 100]
    assert notices[2][-1] == ("c600", "tasks")


async def test_a_failing_batch_is_logged_and_counted_and_its_connections_go_on(fresh_delivery_stores, caplog):
    from prometheus_client import REGISTRY

    class Broken:
        async def depart(self, departures):
            raise ConnectionError("Redis is down")

    runtime().swap_store("members", Broken())
    before = REGISTRY.get_sample_value("conduit_errors_total", {"where": "presence"}) or 0.0
    await asyncio.wait_for(LocalConnections().depart("c1", "tasks", ["ch"]), timeout=5)
    assert REGISTRY.get_sample_value("conduit_errors_total", {"where": "presence"}) == before + 1
    assert "Could not remove 1 closed connection(s)." in caplog.text
