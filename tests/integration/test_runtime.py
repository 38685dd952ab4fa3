"""The process runtime (``hubs.runtime``): one part per event loop, stores a test can swap, one
reset, and settings changes taking effect without patching import sites."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from hubs.delivery.members import get_members
from hubs.delivery.pending import MemoryPending, get_pending
from hubs.runtime import ack_batcher, get_limiter, local_connections, local_router, runtime


def test_each_event_loop_has_its_own_part():
    async def parts():
        return (local_router(), local_router(), local_connections(), ack_batcher(), runtime().loop())

    first, second = asyncio.run(parts()), asyncio.run(parts())
    assert first[0] is first[1]  # one router per loop and alias
    assert first[4] is not second[4]
    assert {id(p) for p in first[2:4]}.isdisjoint({id(p) for p in second[2:4]})


async def test_a_swapped_store_is_used_until_the_reset():
    mine = MemoryPending()
    runtime().swap_store("pending", mine)
    try:
        assert get_pending() is mine
        with override_settings(CONDUIT_RT={"KEY_PREFIX": "elsewhere"}):  # settings do not undo a swap
            assert get_pending() is mine
    finally:
        runtime().reset()
    assert get_pending() is not mine


def test_unknown_store_names_say_which_exist():
    with pytest.raises(KeyError, match="history, members, monitor, negotiated, pending"):
        runtime().swap_store("pendings", MemoryPending())


def test_apps_register_their_stores():
    assert "monitor" in runtime().store_names()  # the monitoring app, in its ready()


async def test_settings_changes_rebuild_what_is_made_from_them():
    members = get_members()
    with override_settings(CONDUIT_RT={"RATE_LIMIT": "5/second"}):
        five = get_limiter()
        assert five is not None and five.item.amount == 5
        assert get_limiter() is five
    with override_settings(CONDUIT_RT={"RATE_LIMIT": "7/second"}):
        assert get_limiter().item.amount == 7
    with override_settings(CONDUIT_RT={"RATE_LIMIT": ""}):
        assert get_limiter() is None
    with override_settings(CONDUIT_RT={"KEY_PREFIX": "other-prefix"}):
        assert get_members() is not members


async def test_runners_start_once_per_loop_and_stop_with_the_reset(monkeypatch):
    monkeypatch.setattr(runtime(), "autostart_runners", True)
    started = []

    async def forever():
        started.append(1)
        await asyncio.Event().wait()

    part = runtime().loop()
    assert part.ensure_runner("test-runner", forever) is True
    assert part.ensure_runner("test-runner", forever) is True
    await asyncio.sleep(0)
    assert started == [1]
    assert part.runner_names() == ["test-runner"]
    runtime().reset()
    await asyncio.sleep(0)  # the reset cancels the runners of a loop that runs, on that loop
    assert part.runner_names() == []
    monkeypatch.setattr(runtime(), "autostart_runners", False)
    assert runtime().loop().ensure_runner("test-runner", forever) is False
