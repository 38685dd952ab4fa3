"""Pending acknowledgements: one contract, two backends (memory, real Redis), explicit times."""

from __future__ import annotations

import pytest

from hubs.delivery.pending import MemoryPending, PendingEntry, RedisPending


@pytest.fixture(params=["memory", "redis"])
def pending(request):
    if request.param == "memory":
        return MemoryPending()
    return request.getfixturevalue("redis_backend")(RedisPending)


async def test_register_and_ack_are_per_connection_and_idempotent(pending):
    await pending.register("m1", ["c1", "c2"], due=100.0)
    assert await pending.for_connection("c1") == [PendingEntry("c1", "m1", 0, 100.0)]
    assert await pending.ack("c1", "m1") is True
    assert await pending.ack("c1", "m1") is False  # twice: no error
    assert await pending.ack("c1", "unknown") is False
    assert await pending.for_connection("c1") == []
    assert await pending.for_connection("c2") == [PendingEntry("c2", "m1", 0, 100.0)]


async def test_claims_are_leased_so_no_entry_is_taken_twice(pending):
    await pending.register("m1", ["c1"], due=100.0)
    await pending.register("m2", ["c1"], due=50.0)
    await pending.register("m3", ["c2"], due=200.0)
    assert await pending.claim_due(now=10.0, limit=10, lease=30) == []
    claimed = await pending.claim_due(now=150.0, limit=10, lease=30)
    assert [(e.message_id, e.due) for e in claimed] == [("m2", 50.0), ("m1", 100.0)]  # oldest first
    assert await pending.claim_due(now=150.0, limit=10, lease=30) == []  # leased until 180
    # The lease expired (the worker that claimed them crashed): they come back, limit respected.
    again = await pending.claim_due(now=181.0, limit=1, lease=30)
    assert len(again) == 1 and again[0].message_id in {"m1", "m2"}


async def test_reschedule_counts_attempts_unless_acked_meanwhile(pending):
    await pending.register("m1", ["c1"], due=100.0)
    (entry,) = await pending.claim_due(now=100.0, limit=10, lease=30)
    assert await pending.reschedule(entry, due=110.0) is True
    assert await pending.for_connection("c1") == [PendingEntry("c1", "m1", 1, 110.0)]
    (entry,) = await pending.claim_due(now=110.0, limit=10, lease=30)
    assert entry.attempts == 1
    assert await pending.ack("c1", "m1") is True
    assert await pending.reschedule(entry, due=130.0) is False  # the ack won: nothing comes back
    assert await pending.claim_due(now=1000.0, limit=10, lease=30) == []


async def test_drop_forgets_the_entry(pending):
    await pending.register("m1", ["c1"], due=1.0)
    (entry,) = await pending.claim_due(now=1.0, limit=10, lease=30)
    await pending.drop(entry)
    assert await pending.for_connection("c1") == []
    assert await pending.claim_due(now=1000.0, limit=10, lease=30) == []
