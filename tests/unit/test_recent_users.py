"""``RecentUsers``: users kept ``ttl`` seconds on an injected clock, bounded, misses never kept."""

from __future__ import annotations

from hubs.auth.users import RecentUsers
from tests.support.clock import Clock


class Loader:
    def __init__(self, value: object) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        return self.value


async def test_a_user_is_loaded_once_per_ttl():
    clock, load = Clock(0.0), Loader("alice")
    recent = RecentUsers(clock=clock)
    assert await recent.get("k", 30, load) == "alice"
    clock.now = 29.9
    assert await recent.get("k", 30, load) == "alice"
    assert load.calls == 1
    clock.now = 30.0
    assert await recent.get("k", 30, load) == "alice"
    assert load.calls == 2


async def test_misses_are_not_kept_and_ttl_zero_keeps_nothing():
    clock = Clock(0.0)
    recent = RecentUsers(clock=clock)
    nobody = Loader(None)
    assert await recent.get("k", 30, nobody) is None
    assert await recent.get("k", 30, nobody) is None
    assert nobody.calls == 2
    someone = Loader("bob")
    await recent.get("j", 0, someone)
    await recent.get("j", 0, someone)
    assert someone.calls == 2 and len(recent) == 0


async def test_the_least_recently_used_user_goes_first():
    recent = RecentUsers(max_entries=2, clock=Clock(0.0))
    loads = {key: Loader(key) for key in "abc"}
    await recent.get("a", 30, loads["a"])
    await recent.get("b", 30, loads["b"])
    await recent.get("a", 30, loads["a"])  # a is now the most recent
    await recent.get("c", 30, loads["c"])  # b goes
    assert len(recent) == 2
    await recent.get("a", 30, loads["a"])
    await recent.get("b", 30, loads["b"])
    assert (loads["a"].calls, loads["b"].calls) == (1, 2)
