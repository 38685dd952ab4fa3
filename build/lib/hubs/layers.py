"""Channel layers: Channels' in-memory layer with its expiry sweep throttled (the embedded default).

Channels' ``InMemoryChannelLayer`` sweeps every queue and every group membership for expired
entries on *each* ``receive`` and ``group_send``. With N connections each receiving a broadcast that
is O(N) per delivery, O(N²) per broadcast: at 1,000 connections it dominated the server's CPU.
Expiry (60 s for messages, a day for memberships) does not need that precision, so this layer sweeps
at most once per ``sweep_interval`` seconds; everything else is Channels' code. The Redis layer,
the production path, has no such sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    """In-memory layer whose expiry sweep runs at most every ``sweep_interval`` seconds."""

    def __init__(
        self, sweep_interval: float = 1.0, clock: Callable[[], float] = time.monotonic, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.sweep_interval = sweep_interval
        self._clock = clock
        self._last_sweep: float | None = None

    def _clean_expired(self) -> None:
        now = self._clock()
        if self._last_sweep is not None and now - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = now
        super()._clean_expired()
