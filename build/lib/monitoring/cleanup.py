"""The stale-connection cleanup: one pass closes idle connections and removes dead ones.

- A connection whose lease expired belongs to a process that died (or lost Redis for longer than
  ``PRESENCE_TTL``): its socket is gone with the process. The pass removes what it left: its
  memberships (so acknowledged sends stop counting it as a recipient), its presence lease and
  its monitor record.
- A live connection that exchanged no hub message for ``STALE_THRESHOLD`` seconds is closed: the
  pass sends ``conduit.close`` to the connection's own channel-layer group, which reaches its
  server wherever it runs; that server writes a SignalR Close message, closes the real socket, and
  its teardown removes the state as for any other close.

Both are counted in ``conduit_stale_connections_cleaned_total{hub,reason}``. A pass is
idempotent; ``CLEANUP_RUNNER`` chooses who runs it (``monitoring.runner`` or the beat task
``monitoring.cleanup_stale_connections``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from hubs.conf import conduit_settings
from hubs.delivery.members import get_members
from hubs.metrics import hub_metrics
from hubs.send import aclose_connection

from .monitor import get_monitor

logger = logging.getLogger(__name__)


@dataclass
class CleanupResult:
    """What one pass did."""

    expired: int = 0
    idle: int = 0


def idle_close_error(threshold: float) -> str:
    """The error the client's close message carries."""
    return f"Connection closed by the server: no messages for {threshold:g} s."


async def cleanup_stale(*, threshold: float | None = None, limit: int = 1000) -> CleanupResult:
    """Run one pass: remove up to ``limit`` expired connections, close up to ``limit`` idle ones."""
    threshold = float(conduit_settings.STALE_THRESHOLD) if threshold is None else threshold
    monitor, members = get_monitor(), get_members()
    metrics = hub_metrics()
    result = CleanupResult()
    for record in await monitor.expired(limit):
        await members.remove(record.connection_id, record.channels, forget_user=True)
        await members.vanish(record.connection_id)
        await monitor.remove(record.connection_id, record.hub)
        metrics.stale_cleaned.labels(hub=record.hub, reason="expired").inc()
        result.expired += 1
        logger.info(
            "Removed connection %s of %s: its server %s stopped renewing it.",
            record.connection_id,
            record.hub,
            record.server_id,
        )
    for record in await monitor.idle(threshold, limit):
        await aclose_connection(
            record.connection_id, idle_close_error(threshold), layer_alias=record.layer_alias
        )
        metrics.stale_cleaned.labels(hub=record.hub, reason="idle").inc()
        result.idle += 1
        logger.info(
            "Closing connection %s of %s: idle for %.0f s.",
            record.connection_id,
            record.hub,
            record.idle_for(time.time()),
        )
    return result
