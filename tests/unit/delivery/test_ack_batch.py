"""The ack batcher: acks of one loop turn reach the pending store in one call, each caller gets
its own answer, and a store failure reaches every caller of that batch."""

from __future__ import annotations

import asyncio

import pytest

from hubs.delivery import ack_batch
from hubs.delivery.pending import MemoryPending


class CountingPending(MemoryPending):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.fail = False
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def ack_many(self, pairs):
        self.calls.append(len(pairs))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("redis went away")
        return await super().ack_many(pairs)


@pytest.fixture
def store(monkeypatch):
    pending = CountingPending()
    monkeypatch.setattr(ack_batch, "get_pending", lambda: pending)
    return pending


async def test_acks_of_one_turn_go_in_one_call_with_their_own_answers(store):
    await store.register("m1", ["c1", "c2", "c3"], due=10.0)
    batcher = ack_batch.AckBatcher()
    answers = await asyncio.wait_for(
        asyncio.gather(
            batcher.ack("c1", "m1"), batcher.ack("c2", "m1"), batcher.ack("c9", "m1"), batcher.ack("c1", "m1")
        ),
        timeout=5,
    )
    assert answers == [True, True, False, False]
    assert store.calls == [4]
    assert await store.count() == 1


async def test_acks_arriving_during_a_call_form_the_next_batch(store):
    store.gate = asyncio.Event()
    batcher = ack_batch.AckBatcher()
    first = asyncio.ensure_future(batcher.ack("c1", "m1"))
    await asyncio.wait_for(store.called.wait(), timeout=5)  # the first batch is in flight
    rest = [asyncio.ensure_future(batcher.ack(f"c{i}", "m1")) for i in range(2, 6)]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), timeout=5)
    assert store.calls == [1, 4]


async def test_a_failed_call_fails_every_ack_of_its_batch_and_the_next_one_works(store):
    batcher = ack_batch.AckBatcher()
    store.fail = True
    results = await asyncio.wait_for(
        asyncio.gather(batcher.ack("c1", "m1"), batcher.ack("c2", "m1"), return_exceptions=True), timeout=5
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    store.fail = False
    assert await asyncio.wait_for(batcher.ack("c1", "m1"), timeout=5) is False


async def test_a_call_with_many_ids_shares_the_batch_and_gets_its_own_slice(store):
    await store.register("m1", ["c1", "c2"], due=10.0)
    await store.register("m2", ["c1"], due=10.0)
    batcher = ack_batch.AckBatcher()
    single, many, other = await asyncio.wait_for(
        asyncio.gather(
            batcher.ack("c2", "m1"),
            batcher.ack_many("c1", ["m1", "m9", "m2"]),
            batcher.ack_many("c3", []),
        ),
        timeout=5,
    )
    assert (single, many, other) == (True, [True, False, True], [])
    assert store.calls == [4]
    assert await store.count() == 0
