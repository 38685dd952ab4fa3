"""A connection whose application is cancelled while it releases its state (daphne kills it
``application_close_timeout`` seconds after its client left, as a disconnect storm at capacity
can make it) still leaves nothing behind: its release runs to its end; only the hub's own
``on_connection_lost`` hook is cut short."""

from __future__ import annotations

import asyncio

import pytest

from hubs.delivery.members import get_members
from hubs.fanout import LocalRouter
from monitoring.monitor import get_monitor
from tests.support.delivery import delivery_settings

pytestmark = [pytest.mark.django_db(transaction=True)]

TIMEOUT = 5.0


@pytest.fixture(params=["memory", "redis"])
async def stores(request, fresh_delivery_stores):
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with delivery_settings(redis_url) as conf:
        yield conf


async def test_a_connection_killed_while_it_leaves_its_groups_still_leaves_nothing(
    stores, hub_client, alice_token, monkeypatch
):
    client = await hub_client("/hubs/tasks", token=alice_token)
    assert (await client.invoke("Ping")).error is None  # the handshake's joins and record are done
    (record,) = await get_monitor().connections("tasks")
    assert await get_members().alive([record.connection_id]) == {record.connection_id}

    leaving, release = asyncio.Event(), asyncio.Event()
    discard = LocalRouter.discard

    async def slow_discard(self, group, member):
        leaving.set()
        await release.wait()  # a busy Redis pool, a loop saturated by thousands of closes
        await discard(self, group, member)

    monkeypatch.setattr(LocalRouter, "discard", slow_discard)
    communicator = client.communicator
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(leaving.wait(), TIMEOUT)

    communicator.future.cancel()  # daphne's kill: the application task is cancelled
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(communicator.future, TIMEOUT)
    assert await get_monitor().get(record.connection_id) is not None  # the release still waits

    release.set()
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while await get_monitor().get(record.connection_id) is not None:
        assert asyncio.get_running_loop().time() < deadline, "the release stopped with its connection"
        await asyncio.sleep(0.01)
    assert await get_members().alive([record.connection_id]) == set()
    assert await get_monitor().connections() == []
