"""The monitoring app's receivers of the core's signals (``hubs.signals``): they keep the
connection monitor (``monitoring.monitor``) in step with the connections and processes the core
reports, and start the embedded stale cleanup with a server's first connection.

Connected by ``MonitoringConfig.ready()``; without the app in ``INSTALLED_APPS`` nothing listens
and the core serves as before. A receiver's error is logged and counted by the core's ``notify``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hubs import signals
from hubs.records import ConnectionRecord, ServerRecord

from .monitor import flush_tally, get_monitor
from .runner import ensure_cleanup_runner


async def connection_opened(sender: Any, record: ConnectionRecord, ttl: float, **kwargs: Any) -> None:
    """Write the new connection's record; the first connection of a loop starts the embedded
    cleanup runner (daphne serves no lifespan events to start it earlier)."""
    ensure_cleanup_runner()
    await get_monitor().upsert([record], ttl)


async def connection_changed(sender: Any, record: ConnectionRecord, ttl: float, **kwargs: Any) -> None:
    """Write the record of a connection that joined or left a group."""
    await get_monitor().upsert([record], ttl)


async def connections_renewed(
    sender: Any,
    records: Sequence[ConnectionRecord],
    connections: Mapping[str, str],
    ttl: float,
    **kwargs: Any,
) -> None:
    """A presence round: write the records that changed and renew every connection's lease."""
    await get_monitor().renew(records, connections, ttl)


async def connections_closed(sender: Any, connections: Sequence[tuple[str, str]], **kwargs: Any) -> None:
    """Remove the records of closed connections (``(connection_id, hub)`` pairs)."""
    await get_monitor().remove_many(connections)


async def process_report(sender: Any, server: ServerRecord | None, ttl: float, **kwargs: Any) -> None:
    """Write a serving process's record, then add its delivery counts to the per-minute figures."""
    if server is not None:
        await get_monitor().server_heartbeat(server, ttl)
    await flush_tally()


def connect() -> None:
    """Connect the receivers (idempotent: each has a ``dispatch_uid``)."""
    receivers = (
        (signals.connection_opened, connection_opened),
        (signals.connection_changed, connection_changed),
        (signals.connections_renewed, connections_renewed),
        (signals.connections_closed, connections_closed),
        (signals.process_report, process_report),
    )
    for signal, receiver in receivers:
        signal.connect(receiver, dispatch_uid=f"monitoring.{receiver.__name__}")
