"""The throttled in-memory layer: expiry still happens, just not on every receive."""

from __future__ import annotations

import asyncio

import pytest

from hubs.layers import InMemoryChannelLayer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_sweeps_at_most_once_per_interval(monkeypatch):
    clock = Clock()
    layer = InMemoryChannelLayer(sweep_interval=1.0, clock=clock)
    sweeps: list[float] = []
    monkeypatch.setattr(
        "channels.layers.InMemoryChannelLayer._clean_expired", lambda self: sweeps.append(clock.now)
    )
    channel = await layer.new_channel()
    for _ in range(5):
        await layer.send(channel, {"type": "x"})
        await asyncio.wait_for(layer.receive(channel), timeout=1)
    assert sweeps == [0.0]
    clock.now = 1.5
    await layer.send(channel, {"type": "x"})
    await asyncio.wait_for(layer.receive(channel), timeout=1)
    assert sweeps == [0.0, 1.5]


async def test_expired_messages_and_members_are_still_removed():
    clock = Clock()
    layer = InMemoryChannelLayer(sweep_interval=1.0, clock=clock, expiry=-1)  # expire at once
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.send(channel, {"type": "stale"})
    clock.now = 5.0
    layer._clean_expired()
    assert "g" not in layer.groups or channel not in layer.groups["g"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), timeout=0.05)
