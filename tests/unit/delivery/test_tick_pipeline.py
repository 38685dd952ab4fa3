"""``TickPipeline``: the calls of one loop iteration share one round trip to a real Redis, and
each caller gets its own results, or its own error, back."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from hubs.delivery.redis import PerLoopRedis
from hubs.delivery.tick_pipeline import MAX_CALLS, TickPipeline


@pytest.fixture
async def client(redis_url):
    found = aioredis.Redis.from_url(redis_url)
    yield found
    await found.aclose()


def counting(client, monkeypatch) -> list[int]:
    """The number of commands of each round trip the client's pipelines make."""
    trips: list[int] = []
    original = type(client.pipeline()).execute

    async def execute(self, raise_on_error=True):
        trips.append(len(self.command_stack))
        return await original(self, raise_on_error=raise_on_error)

    monkeypatch.setattr(type(client.pipeline()), "execute", execute)
    return trips


async def test_the_calls_of_one_iteration_share_a_round_trip(client, monkeypatch):
    trips = counting(client, monkeypatch)
    batch = TickPipeline(client)

    async def connect(n: int) -> list:
        return await batch.run(lambda pipe: (pipe.set(f"k{n}", n), pipe.incr("count")))

    results = await asyncio.wait_for(asyncio.gather(*(connect(n) for n in range(50))), timeout=10)
    assert trips == [100]  # 50 callers, 2 commands each, one round trip
    assert [r[0] for r in results] == [True] * 50
    assert sorted(r[1] for r in results) == list(range(1, 51))  # each got its own INCR's answer
    assert int(await client.get("k7")) == 7


async def test_a_callers_error_reaches_that_caller_only(client):
    batch = TickPipeline(client)
    await client.set("text", "not a number")

    def broken(pipe) -> None:
        pipe.set("half", 1)
        raise ValueError("bad build")

    outcomes = await asyncio.wait_for(
        asyncio.gather(
            batch.run(lambda pipe: pipe.incr("text")),  # Redis answers an error
            batch.run(broken),  # the caller's own code fails while queueing
            batch.run(lambda pipe: pipe.set("fine", 1)),
            return_exceptions=True,
        ),
        timeout=10,
    )
    assert isinstance(outcomes[0], aioredis.ResponseError)
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == [True]
    assert await client.get("half") is None  # the failed build's commands were not sent


async def test_a_lost_round_trip_fails_every_caller_of_it():
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    batch = TickPipeline(dead)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(batch.run(lambda pipe: pipe.get("k")) for _ in range(3)), return_exceptions=True),
        timeout=10,
    )
    assert all(isinstance(o, aioredis.ConnectionError) for o in outcomes), outcomes
    await dead.aclose()


async def test_more_calls_than_a_round_trip_carries_go_in_the_next(client, monkeypatch):
    trips = counting(client, monkeypatch)
    batch = TickPipeline(client)
    await asyncio.wait_for(
        asyncio.gather(*(batch.run(lambda pipe: pipe.ping()) for _ in range(MAX_CALLS + 10))), timeout=10
    )
    assert sorted(trips) == [10, MAX_CALLS]


async def test_each_loop_gets_its_own_batch(redis_url):
    redis = PerLoopRedis(redis_url)
    first = redis.batch()
    assert redis.batch() is first
    assert await first.run(lambda pipe: pipe.ping()) == [True]
    await redis.aclose()
    assert redis.batch() is not first
    await redis.aclose()
