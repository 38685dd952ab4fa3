"""The hub side of the fan-out benchmark: a plain anonymous ``Hub`` with ``Join`` and ``Broadcast``.

``Broadcast(group, count)`` runs the loop of ``count`` group sends inside the server process,
each through ``self.clients.group(group).asend(...)`` (encoded once per protocol, carried by the
layer, written pre-encoded by every member), and returns how long the loop took.
"""

from __future__ import annotations

import time
from typing import Any

from hubs.errors import HubError
from hubs.hub import Hub
from hubs.methods import hub_method

#: Largest ``count`` one ``Broadcast`` accepts (a bound, not a tuning knob).
MAX_BROADCAST = 100_000
#: The server event every member receives; its payload is ``{"i": n, "t": <sender time.time()>}``
#: (``seq`` belongs to the envelope).
TICK = "Tick"


class BenchHub(Hub):
    """Anonymous hub served at ``/bench/hub``."""

    hub_name = "bench"

    @hub_method
    async def join(self, group: str) -> bool:
        """Join ``group``; the completion comes back once the layer has the membership."""
        await self.groups.add(group)
        return True

    @hub_method
    async def broadcast(self, group: str, count: int) -> dict[str, Any]:
        """Send ``count`` ``Tick`` events to ``group``, one ``asend`` each, in order."""
        if not isinstance(count, int) or not 0 < count <= MAX_BROADCAST:
            raise HubError(f"count must be an integer in 1..{MAX_BROADCAST}.")
        assert self.clients is not None
        target = self.clients.group(group)
        started = time.time()
        for seq in range(count):
            await target.asend(TICK, {"i": seq, "t": time.time()})
        return {"sent": count, "seconds": time.time() - started}
