"""The hub side of the fan-out benchmark: a plain anonymous ``Hub`` with ``Join`` and ``Broadcast``.

``Broadcast(group, count)`` runs the loop of ``count`` group sends inside the server process,
each through ``self.clients.group(group).asend(...)`` (encoded once per protocol, carried by the
layer, written pre-encoded by every member), and returns how long the loop took.
"""

from __future__ import annotations

import time
from typing import Any

from hubs.delivery import receipts
from hubs.delivery.pending import get_pending
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


# ------------------------------------------------------------------------------------ acked bench
# Used by ``bench/acked.py`` (served at ``/bench/acked-hub``); ``BenchHub`` above is unchanged.

#: Acknowledgements this process handled since the last ``AckedBroadcast``: (message id, wall
#: time once the pending entry was cleared, whether there was one to clear).
_ACKS: list[tuple[str, float, bool]] = []
#: Message id → the sender's ``time.time()`` just before its ``asend``, for the same broadcast.
_SENT: dict[str, float] = {}


class AckBenchHub(BenchHub):
    """``BenchHub`` plus an acknowledged broadcast and server-side ack timing (``/bench/acked-hub``).

    ``AcknowledgeMessage`` is the base hub's (inline, clears the pending entry); this subclass only
    notes the wall time after it returned, so ``AckStats`` can report when the server had
    processed each ack. Module-level state: one daphne process, one run at a time.
    """

    hub_name = "bench-acked"

    @hub_method
    async def acked_broadcast(self, group: str, count: int, ack: bool) -> dict[str, Any]:
        """Send ``count`` ``Tick`` events to ``group`` with ``asend(..., ack=ack)``, in order.

        Forgets the acks and send times of the previous run first. Each payload carries the
        sender's ``time.time()`` taken just before its ``asend`` (before the row is written).
        """
        if not isinstance(count, int) or not 0 < count <= MAX_BROADCAST:
            raise HubError(f"count must be an integer in 1..{MAX_BROADCAST}.")
        if not isinstance(ack, bool):
            raise HubError("ack must be a boolean.")
        assert self.clients is not None
        _ACKS.clear()
        _SENT.clear()
        target = self.clients.group(group)
        started = time.time()
        for seq in range(count):
            sent = time.time()
            message_id = await target.asend(TICK, {"i": seq, "t": sent}, ack=ack)
            _SENT[message_id] = sent
        return {"sent": count, "seconds": time.time() - started}

    @hub_method
    async def acknowledge_message(self, message_id: str) -> bool:
        """The base hub's ``AcknowledgeMessage``, then note when it finished (for ``AckStats``)."""
        cleared = await super().acknowledge_message(message_id)
        _ACKS.append((message_id, time.time(), cleared))
        return cleared

    @hub_method
    async def acknowledge_messages(self, message_ids: list[str]) -> int:
        """The base hub's ``AcknowledgeMessages`` (its receipts, per id), then note when each id
        was done."""
        assert self.context is not None
        connection_id = self.context.connection_id
        cleared = await receipts.acknowledge_many(self.get_hub_name(), connection_id, message_ids)
        now = time.time()
        _ACKS.extend((message_id, now, ok) for message_id, ok in zip(message_ids, cleared, strict=True))
        return sum(cleared)

    @hub_method
    async def ack_progress(self) -> dict[str, int]:
        """Cheap progress poll: acks handled so far and how many cleared a pending entry."""
        return {"acks": len(_ACKS), "cleared": sum(1 for _, _, cleared in _ACKS if cleared)}

    @hub_method
    async def pending_count(self) -> int:
        """Entries in the pending store (all connections; the bench uses its own key prefix)."""
        return await get_pending().count()

    @hub_method
    async def ack_stats(self) -> dict[str, Any]:
        """Server-side timing of the last broadcast's acks.

        ``latencies``: for every ack that cleared a pending entry, wall time once cleared minus
        the message's send time (seconds). ``first_sent``/``last_ack`` (``firstSent``/``lastAck``
        on the wire): the window of the acknowledged-throughput figure.
        """
        cleared = [(mid, at) for mid, at, ok in _ACKS if ok]
        latencies = [round(at - _SENT[mid], 6) for mid, at in cleared if mid in _SENT]
        return {
            "sent": len(_SENT),
            "acks": len(_ACKS),
            "cleared": len(cleared),
            "unknown": len(_ACKS) - len(cleared),
            "unmatched": len(cleared) - len(latencies),
            "first_sent": min(_SENT.values()) if _SENT else None,
            "last_ack": max((at for _, at in cleared), default=None),
            "latencies": latencies,
        }
