"""Stream histories: one contract, two backends (memory with an injected clock, real Redis)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from hubs.delivery.history import MemoryHistory, Position, RedisHistory, Replay, get_history


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def make_history(request):
    """Factory ``make_history(max_length=...)`` for each backend."""
    build = request.getfixturevalue("redis_backend") if request.param == "redis" else None

    def make(max_length: int = 100):
        if build is None:
            return MemoryHistory(max_length=max_length, max_age=300)
        return build(RedisHistory, max_length=max_length, max_age=300)

    return make


async def test_sequence_numbers_and_reads_after_a_position(make_history):
    history = make_history()
    assert await history.position("s") is None
    assert await history.read_after("s", None, 0) == Replay(None, None)
    positions = [await history.append("s", f"m{i}", "Tick", {"i": i}) for i in range(1, 4)]
    epoch = positions[0].epoch
    assert positions == [Position(epoch, 1), Position(epoch, 2), Position(epoch, 3)]
    assert await history.position("s") == Position(epoch, 3)

    replay = await history.read_after("s", epoch, 0)
    assert replay.position == Position(epoch, 3) and replay.recovered
    everything = replay.entries
    assert [(e.seq, e.message_id, e.method, e.body) for e in everything] == [
        (1, "m1", "Tick", {"i": 1}),
        (2, "m2", "Tick", {"i": 2}),
        (3, "m3", "Tick", {"i": 3}),
    ]
    assert [e.seq for e in (await history.read_after("s", epoch, 2)).entries] == [3]
    assert (await history.read_after("s", epoch, 3)).entries == []
    assert [e.seq for e in (await history.read_after("s", None, 1)).entries] == [
        2,
        3,
    ]  # epoch unknown to the client
    assert (await history.read_after("s", "another-epoch", 1)).entries is None
    assert (await history.read_after("s", epoch, 4)).entries is None  # the client is ahead: a reset it missed
    assert (await history.append("other", "x", "Tick", {})).seq == 1  # streams are independent


async def test_a_gap_older_than_the_kept_length_cannot_be_recovered(make_history):
    history = make_history(max_length=5)
    for i in range(12):
        position = await history.append("s", f"m{i}", "Tick", {})
    assert position.seq == 12
    assert (await history.read_after("s", position.epoch, 6)).entries is None  # 7 was trimmed
    assert [e.seq for e in (await history.read_after("s", position.epoch, 7)).entries] == [8, 9, 10, 11, 12]


async def test_redis_state_loss_starts_a_new_epoch(redis_backend):
    history = redis_backend(RedisHistory, max_length=10, max_age=300)
    first = await history.append("s", "a", "Tick", {})
    await history.redis.client().delete(f"{history.prefix}s:meta")
    second = await history.append("s", "b", "Tick", {})
    assert second.seq == 1 and second.epoch != first.epoch
    assert (await history.read_after("s", first.epoch, 1)).entries is None
    assert [e.message_id for e in (await history.read_after("s", second.epoch, 0)).entries] == ["b"]


async def test_memory_history_forgets_by_age_on_the_injected_clock():
    clock = Clock()
    history = MemoryHistory(max_length=100, max_age=60, clock=clock)
    first = await history.append("s", "a", "Tick", {})
    clock.now += 30
    await history.append("s", "b", "Tick", {})
    assert [e.seq for e in (await history.read_after("s", first.epoch, 0)).entries] == [1, 2]
    clock.now += 31  # "a" is now 61 s old
    assert (await history.read_after("s", first.epoch, 0)).entries is None
    assert [e.seq for e in (await history.read_after("s", first.epoch, 1)).entries] == [2]


def test_get_history_follows_the_settings(redis_url):
    assert isinstance(get_history(), MemoryHistory)
    assert get_history() is get_history()
    with override_settings(
        CONDUIT_RT={"HISTORY_BACKEND": "hubs.delivery.history.RedisHistory", "REDIS_URL": redis_url}
    ):
        assert isinstance(get_history(), RedisHistory)
    assert isinstance(get_history(), MemoryHistory)


async def test_memory_history_forgets_idle_streams_on_an_hourly_sweep():
    clock = Clock()
    history = MemoryHistory(max_length=100, max_age=60, clock=clock)
    old = await history.append("old", "a", "Tick", {})
    clock.now += 86401
    await history.append("fresh", "b", "Tick", {})  # more than an hour since the last sweep: sweeps
    assert await history.position("old") is None
    assert (await history.append("old", "c", "Tick", {})).epoch != old.epoch  # starts over
    assert await history.position("fresh") is not None
