"""Per-process fan-out (``hubs.fanout``): the process's router is the only channel-layer member of
a group, hands each message to its local connections, and survives a failing layer."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from hubs import fanout
from hubs.naming import group_channel
from hubs.runtime import local_router
from hubs.send import get_hub_context

pytestmark = [pytest.mark.django_db(transaction=True)]

ECHO = "tests.support.echo_hub.EchoHub"


async def joined(hub_client, group: str = "room"):
    client = await hub_client("/hubs/echo")
    await client.invoke("Join", group)
    return client


async def test_one_layer_membership_per_process_however_many_local_members(hub_client):
    layer = get_channel_layer()
    channel = group_channel("echo", "room")
    one, two = await joined(hub_client), await joined(hub_client)
    router = local_router()
    assert layer.groups[channel].keys() == {router.channel_name}
    assert len(router.groups[channel]) == 2

    await get_hub_context(ECHO).clients.group("room").asend("Note", {"n": 1})
    for client in (one, two):
        assert (await client.next_event()).arguments[0]["n"] == 1

    await one.invoke("Leave", "room")
    assert channel in layer.groups and len(router.groups[channel]) == 1  # two is still in it
    await two.invoke("Leave", "room")
    assert channel not in router.groups
    assert router.channel_name not in layer.groups.get(channel, {})


async def test_the_router_stops_with_its_last_connection(hub_client):
    client = await joined(hub_client)
    router = local_router()
    task = router._task
    assert task is not None and not task.done()
    await client.close()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=3)
    assert task.cancelled() and router.groups == {}


async def test_a_failing_receive_is_retried_and_the_groups_joined_again(hub_client, monkeypatch):
    monkeypatch.setattr(fanout, "RETRY_DELAY", 0.0)
    client = await joined(hub_client)
    layer = get_channel_layer()
    channel = group_channel("echo", "room")
    router = local_router()
    real_receive = layer.receive
    failed = asyncio.Event()

    async def flaky(name: str):
        if not failed.is_set():
            failed.set()
            layer.groups.pop(channel, None)  # as a Redis that restarted empty
            raise ConnectionError("the layer went away")
        return await real_receive(name)

    real_group_add = layer.group_add
    rejoined = asyncio.Event()

    async def watched_group_add(group: str, name: str) -> None:
        await real_group_add(group, name)
        if failed.is_set() and group == channel:
            rejoined.set()

    monkeypatch.setattr(layer, "receive", flaky)
    monkeypatch.setattr(layer, "group_add", watched_group_add)
    router._task.cancel()  # restart the loop on the flaky receive
    router._task = None
    await router._channel()
    await asyncio.wait_for(failed.wait(), timeout=3)
    await asyncio.wait_for(rejoined.wait(), timeout=3)
    await get_hub_context(ECHO).clients.group("room").asend("Note", {"n": 2})
    assert (await client.next_event()).arguments[0]["n"] == 2


async def test_a_member_that_fails_does_not_keep_the_message_from_the_others(hub_client, monkeypatch):
    one, two = await joined(hub_client), await joined(hub_client)
    router = local_router()
    channel = group_channel("echo", "room")
    broken = next(iter(router.groups[channel]))

    async def boom(message):
        raise RuntimeError("handler bug")

    monkeypatch.setattr(broken, "dispatch", boom)
    await get_hub_context(ECHO).clients.group("room").asend("Note", {"n": 3})
    received = []
    for client in (one, two):
        if not await client.nothing_more(0.3):
            received.append((await client.next_event()).arguments[0]["n"])
    assert received == [3]
