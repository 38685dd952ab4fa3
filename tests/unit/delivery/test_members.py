"""The membership registry: one contract, two backends (memory, real Redis)."""

from __future__ import annotations

import pytest

from hubs.delivery.members import MemoryMembers, RedisMembers


@pytest.fixture(params=["memory", "redis"])
def members(request):
    if request.param == "memory":
        return MemoryMembers()
    return request.getfixturevalue("redis_backend")(RedisMembers)


async def test_add_remove_and_union(members):
    await members.add("c1", ["g.a", "all"])
    await members.add("c2", ["g.a", "g.b", "all"])
    await members.add("c3", ["all"])
    assert await members.members(["g.a"]) == {"c1", "c2"}
    assert await members.members(["g.a", "g.b"]) == {"c1", "c2"}
    assert await members.members(["all"]) == {"c1", "c2", "c3"}
    await members.remove("c2", ["g.a", "g.b", "all"])
    await members.remove("c2", ["g.a"])  # twice: no error
    assert await members.members(["g.a", "g.b"]) == {"c1"}
    assert await members.members(["nobody"]) == set()
    assert await members.members([]) == set()


async def test_resolve_names_each_members_user_until_it_is_forgotten(members):
    await members.add("c1", ["g", "u7"], user_id="7")
    await members.add("c2", ["g"])
    assert await members.resolve(["g"]) == {"c1": "7", "c2": None}
    await members.remove("c1", ["g", "u7"], forget_user=True)
    await members.add("c1", ["g"])
    assert await members.resolve(["g"]) == {"c1": None, "c2": None}
    assert await members.resolve([]) == {}


async def test_presence_leases_hold_until_they_end(members):
    await members.touch(["c1", "c2"], ttl=30)
    assert await members.alive(["c1", "c2", "c3"]) == {"c1", "c2"}
    await members.vanish("c2")
    assert await members.alive(["c1", "c2"]) == {"c1"}
    assert await members.alive([]) == set()


async def test_depart_forgets_memberships_users_and_leases_of_many_at_once(members):
    await members.add("c1", ["g", "u7"], user_id="7")
    await members.add("c2", ["g", "u8"], user_id="8")
    await members.add("c3", ["g"])
    await members.touch(["c1", "c2", "c3"], ttl=30)
    await members.depart([("c1", ["g", "u7"]), ("c2", ["g", "u8"])])
    assert await members.members(["g", "u7", "u8"]) == {"c3"}
    assert await members.alive(["c1", "c2", "c3"]) == {"c3"}
    await members.add("c1", ["g"])  # an id seen again has no user left
    assert await members.resolve(["g"]) == {"c1": None, "c3": None}
    await members.depart([])


async def test_memory_presence_runs_on_its_clock():
    now = [100.0]
    members = MemoryMembers(clock=lambda: now[0])
    await members.touch(["c1"], ttl=30)
    now[0] = 129.9
    assert await members.alive(["c1"]) == {"c1"}
    now[0] = 130.0
    assert await members.alive(["c1"]) == set()


async def test_resolve_alive_keeps_only_leased_members_with_their_users(members):
    await members.add("c1", ["g"], user_id="7")
    await members.add("c2", ["g"])
    await members.add("c3", ["g"], user_id="8")
    await members.touch(["c1", "c2"], ttl=30)
    assert await members.resolve_alive(["g", "nobody"]) == {"c1": "7", "c2": None}
    assert await members.resolve_alive([]) == {}


async def test_redis_leases_are_one_sorted_set_renewed_in_one_command(redis_backend):
    members = redis_backend(RedisMembers)
    client = members.redis.client()
    ids = [f"c{n}" for n in range(5000)]
    await members.touch(ids, ttl=30)  # a presence round of 5,000 connections: one script call
    assert await client.zcard(members._leases_key) == 5000
    assert await members.alive([*ids[:3], "never"]) == set(ids[:3])
    await client.zadd(members._leases_key, {"dead": 1})  # a dead process's lease, long run out
    assert await members.alive(["dead"]) == set()
    await members.add("dead", ["g"])
    assert await members.resolve_alive(["g"]) == {}
    await members.touch(["c1"], ttl=30)  # the next round drops what ran out
    assert await client.zscore(members._leases_key, "dead") is None
    await members.depart([(c, []) for c in ids])
    assert await client.exists(members._leases_key) == 0
