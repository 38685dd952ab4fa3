"""``PingSlots``: the SignalR keep-alive Pings of thousands of client WebSockets from one task.

Each connection gets a slot of ``PING_SLOT`` seconds within the Ping interval, picked at random
when it is added, so the Pings of a crowd are spread over the interval as the official
clients' are (each pings ``interval`` seconds after it last sent). One task walks the slots in
turn and sends each connection's Ping when its slot comes round. Used by the bench's client
(``bench/connect_client.py``) and the e2e test's (``tests/e2e/clients/many_clients.py``).

A connection is any object with ``ws`` (an ``aiohttp`` WebSocket), ``leaving`` (True once its
owner closes it: no more Pings) and ``slot`` (an int this class keeps).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp

#: The SignalR JSON Ping record.
PING_RECORD = '{"type":6}\x1e'
#: Granularity of the schedule (s): the Pings due within one slot go out together.
PING_SLOT = 0.25


class PingSlots:
    """Sends the Ping of every added connection once per ``interval`` seconds."""

    def __init__(self, interval: float, rng: random.Random) -> None:
        self._rng = rng
        self._slots: list[set[Any]] = [set() for _ in range(max(1, round(interval / PING_SLOT)))]
        self.sent = 0
        self.errors = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, conn: Any) -> None:
        """Ping ``conn`` from its random slot on, the first time within one interval."""
        conn.slot = (self._slot_now() + 1 + self._rng.randrange(len(self._slots))) % len(self._slots)
        self._slots[conn.slot].add(conn)

    def discard(self, conn: Any) -> None:
        """No more Pings for ``conn`` (it closed)."""
        if conn.slot >= 0:
            self._slots[conn.slot].discard(conn)

    def cancel(self) -> None:
        """Stop sending."""
        self._task.cancel()

    def _slot_now(self) -> int:
        return int(time.monotonic() / PING_SLOT) % len(self._slots)

    async def _run(self) -> None:
        last = self._slot_now()
        while True:
            await asyncio.sleep(PING_SLOT - (time.monotonic() % PING_SLOT) + 0.001)
            now = self._slot_now()
            while last != now:  # every slot since the last turn, also those a slow turn skipped
                last = (last + 1) % len(self._slots)
                for conn in list(self._slots[last]):
                    if conn.leaving or conn.ws.closed:
                        continue
                    try:
                        await conn.ws.send_str(PING_RECORD)
                        self.sent += 1
                    except (ConnectionError, RuntimeError, aiohttp.ClientError):
                        self.errors += 1
