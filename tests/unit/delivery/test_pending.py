"""Pending acknowledgements: one contract, two backends (memory, real Redis), explicit times."""

from __future__ import annotations

import pytest

from hubs.delivery.members import MemoryMembers, RedisMembers
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


async def test_entries_remember_their_user_and_can_be_expedited(pending):
    await pending.register("m1", {"c1": "7", "c2": None}, due=100.0)
    assert await pending.for_connection("c1") == [PendingEntry("c1", "m1", 0, 100.0, "7")]
    assert await pending.expedite("c1", "m1", due=5.0) is True
    assert await pending.expedite("c1", "unknown", due=5.0) is False
    (entry,) = await pending.claim_due(now=6.0, limit=10, lease=30)
    assert (entry.connection_id, entry.user_id) == ("c1", "7")
    assert await pending.count() == 2


async def test_a_new_connection_adopts_what_the_users_gone_connections_owe(pending):
    await pending.register("m1", {"old": "7"}, due=100.0)
    await pending.register("m2", {"old": "7", "live": "7"}, due=100.0)
    await pending.register("m3", {"other": "8"}, due=100.0)
    (claimed,) = await pending.claim_due(now=100.0, limit=1, lease=30)
    await pending.reschedule(claimed, due=150.0)  # one of old's has been retried once
    for _ in range(5):
        for entry in await pending.for_connection("old"):
            await pending.reschedule(entry, due=150.0)

    moved = await pending.adopt("7", "new", live={"live"}, due=10.0, max_attempts=2)
    assert sorted((e.message_id, e.attempts, e.due, e.user_id) for e in moved) == [
        ("m1", 2, 10.0, "7"),  # attempts capped so the new connection gets at least one try
        ("m2", 2, 10.0, "7"),
    ]
    assert await pending.for_connection("old") == []
    assert [e.message_id for e in await pending.for_connection("live")] == ["m2"]  # live: kept
    assert [e.message_id for e in await pending.for_connection("other")] == ["m3"]  # other user
    assert await pending.adopt("7", "newer", live=set(), due=10.0, max_attempts=2) != []  # "new" is gone now
    assert await pending.adopt("7", "newest", live={"newer", "live"}, due=10.0, max_attempts=2) == []


async def test_owing_names_the_users_connections_that_had_entries(pending):
    assert await pending.owing("7") == set()
    await pending.register("m1", {"a": "7", "b": "7", "c": "8"}, due=100.0)
    await pending.register("m2", ["anonymous"], due=100.0)
    assert await pending.owing("7") == {"a", "b"}
    await pending.adopt("7", "new", live={"b"}, due=10.0, max_attempts=5)
    assert await pending.owing("7") == {"b", "new"}  # "a" moved to "new"


async def test_adoption_keeps_the_new_connections_own_entry(pending):
    await pending.register("m1", {"old": "7", "new": "7"}, due=100.0)
    assert await pending.adopt("7", "new", live=set(), due=10.0, max_attempts=5) == []
    assert [(e.message_id, e.due) for e in await pending.for_connection("new")] == [("m1", 100.0)]
    assert await pending.count() == 1


async def test_ack_many_answers_per_pair_in_order(pending):
    await pending.register("m1", ["c1", "c2"], due=100.0)
    assert await pending.ack_many([("c1", "m1"), ("c1", "m1"), ("c2", "m1"), ("c3", "m9")]) == [
        True,
        False,
        True,
        False,
    ]
    assert await pending.ack_many([]) == []
    assert await pending.count() == 0


async def test_claims_forget_entries_whose_connection_record_expired(redis_backend):
    store = redis_backend(RedisPending)
    await store.register("m1", ["c1"], due=1.0)
    await store.redis.client().delete(store._attempts("c1"))  # its TTL ran out
    assert await store.claim_due(now=10.0, limit=10, lease=30) == []
    assert await store.count() == 0  # not claimed again and again


@pytest.fixture(params=["memory", "redis", "redis-pending-memory-members"])
def stores(request):
    """A pending store and a membership registry: both in memory, both on Redis (one script
    resolves and registers), or a mix (the two-step path)."""
    if request.param == "memory":
        return MemoryPending(), MemoryMembers()
    build = request.getfixturevalue("redis_backend")
    members = build(RedisMembers) if request.param == "redis" else MemoryMembers()
    return build(RedisPending), members


async def test_register_members_registers_the_live_members_but_the_excluded(stores):
    pending, members = stores
    await members.add("c1", ["g"], user_id="7")
    await members.add("c2", ["g", "h"])
    await members.add("c3", ["g"])
    await members.add("c4", ["h"])
    await members.add("c5", ["g"])  # no presence lease: its server is gone
    await members.touch(["c1", "c2", "c3", "c4"], ttl=60)

    count = await pending.register_members("m1", members, ["g", "h"], exclude=["c3"], due=100.0)

    assert count == 3
    assert await pending.count() == 3
    assert await pending.for_connection("c1") == [PendingEntry("c1", "m1", 0, 100.0, "7")]
    assert await pending.for_connection("c2") == [PendingEntry("c2", "m1", 0, 100.0)]  # once, in both
    assert await pending.for_connection("c3") == []
    assert await pending.for_connection("c4") == [PendingEntry("c4", "m1", 0, 100.0)]
    assert await pending.for_connection("c5") == []
    # The user was recorded: a new connection of user 7 adopts what c1 owed.
    adopted = await pending.adopt("7", "c9", live=[], due=200.0, max_attempts=5)
    assert [(e.connection_id, e.message_id) for e in adopted] == [("c9", "m1")]
    assert await pending.register_members("m2", members, ["nobody"], exclude=[], due=1.0) == 0
    assert await pending.register_members("m3", members, [], exclude=[], due=1.0) == 0


async def test_register_members_takes_thousands_of_recipients_in_one_call(redis_backend):
    # Lua's unpack takes about 8,000 values: the due set is written in chunks.
    members, pending = redis_backend(RedisMembers), redis_backend(RedisPending)
    ids = [f"c{i}" for i in range(6000)]
    for start in range(0, len(ids), 1000):
        async with members.redis.client().pipeline(transaction=False) as pipe:
            for connection_id in ids[start : start + 1000]:
                pipe.sadd(members.prefix + "big", connection_id)
            await pipe.execute()
    await members.touch(ids, ttl=60)
    assert await pending.register_members("m1", members, ["big"], exclude=[], due=5.0) == 6000
    assert await pending.count() == 6000
    await pending.register("m2", ids, due=5.0)
    assert await pending.count() == 12000
