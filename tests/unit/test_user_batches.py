"""``UserBatches``: the loads asked for in one loop iteration go in one ``load_users`` call; the
same key is loaded once; a failure reaches every caller of its batch, and the next batch loads
afresh."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from hubs.auth import user_batches
from hubs.auth.user_batches import MAX_KEYS, UserBatches


@pytest.fixture(autouse=True)
def no_database(monkeypatch):
    # The loads run in a worker thread as in production, without Django's connection handling.
    monkeypatch.setattr(user_batches, "database_sync_to_async", sync_to_async)


async def test_one_call_for_the_keys_of_one_iteration_each_key_once():
    calls: list[list[str]] = []

    def load_users(keys):
        calls.append(list(keys))
        return {k: f"user {k}" for k in keys if k != "gone"}

    batches = UserBatches(load_users)
    found = await asyncio.wait_for(
        asyncio.gather(*(batches.load(k) for k in ["a", "b", "a", "gone", "b"])), timeout=10
    )
    assert calls == [["a", "b", "gone"]]
    assert found == ["user a", "user b", "user a", None, "user b"]
    assert await asyncio.wait_for(batches.load("c"), timeout=10) == "user c"  # a new batch
    assert calls[-1] == ["c"]


async def test_a_failed_load_reaches_every_caller_of_its_batch_only():
    def load_users(keys):
        if "boom" in keys:
            raise RuntimeError("database down")
        return {k: k for k in keys}

    batches = UserBatches(load_users)
    outcomes = await asyncio.wait_for(
        asyncio.gather(batches.load("boom"), batches.load("x"), return_exceptions=True), timeout=10
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert await asyncio.wait_for(batches.load("x"), timeout=10) == "x"


async def test_a_storm_larger_than_a_batch_is_split():
    sizes: list[int] = []

    def load_users(keys):
        sizes.append(len(keys))
        return {k: k for k in keys}

    batches = UserBatches(load_users)
    keys = [str(n) for n in range(MAX_KEYS + 7)]
    assert await asyncio.wait_for(asyncio.gather(*(batches.load(k) for k in keys)), timeout=10) == keys
    assert sorted(sizes) == [7, MAX_KEYS]
