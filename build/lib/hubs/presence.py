"""Presence of this server's connections: leases and monitor records, renewed by one task per loop.

A hub connection registers when its handshake succeeds and unregisters when it closes. While the
loop serves connections, a task renews every ``PRESENCE_TTL / 3`` seconds, for all of them at
once:

- their presence leases (``hubs.delivery.members``: who may receive acknowledged messages);
- their connection-monitor records (``monitoring.monitor``: who is connected, with their counts
  and groups), which carry the same lease;
- this process's own record (connection count, breaker state), and the messages it delivered
  and failed since the last round (the dashboard's per-minute figures).

The task ends when the last connection closes, after one last round.
A process that dies stops renewing, so its connections stop counting as alive after
``PRESENCE_TTL``: reconnect redelivery and the retry pass move what they owe to the user's new
connection, and the stale cleanup removes what they left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import TYPE_CHECKING, Protocol

from monitoring.monitor import flush_tally, get_monitor
from monitoring.records import ConnectionRecord, ServerRecord
from monitoring.tally import process_identity

from .conf import conduit_settings
from .delivery.breaker import get_breaker
from .delivery.members import get_members
from .metrics import hub_metrics

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)


class Monitored(Protocol):
    """A connection as the presence loop sees it (a ``Hub`` once its handshake succeeded)."""

    def monitor_record(self) -> ConnectionRecord:
        """The connection's current monitor record."""
        ...


def _ttl() -> float:
    return float(conduit_settings.PRESENCE_TTL)


class LocalConnections:
    """The connections of one event loop (one server process) and their renewal task."""

    def __init__(self) -> None:
        self.connections: dict[str, Monitored] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Connection ids the renewal round in flight is writing, and those of them that closed
        # meanwhile: the round may write their lease and record after their close removed them.
        self._renewing: set[str] = set()
        self._closed_while_renewing: dict[str, str] = {}

    async def register(self, connection_id: str, connection: Monitored) -> None:
        """Record the connection, take its lease and write its monitor record now."""
        self.connections[connection_id] = connection
        await self._renew_some([connection_id], [connection.monitor_record()])
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="conduit-presence")

    async def refresh(self, connection: Monitored) -> None:
        """Write the connection's monitor record now (it joined or left a group)."""
        await get_monitor().upsert([connection.monitor_record()], _ttl())

    def forget(self, connection_id: str) -> None:
        """Stop renewing the connection's lease (synchronous: the first thing a closing
        connection does, so a teardown cut short can never leave a lease renewed forever)."""
        self.connections.pop(connection_id, None)
        if not self.connections:
            self._wake.set()  # the renewal task reports once more and ends

    async def unregister(self, connection_id: str, hub: str) -> None:
        """Forget the connection, end its lease and remove its monitor record now."""
        self.forget(connection_id)
        if connection_id in self._renewing:
            self._closed_while_renewing[connection_id] = hub
        await asyncio.gather(get_members().vanish(connection_id), get_monitor().remove(connection_id, hub))

    async def _renew_some(self, connection_ids: Iterable[str], records: list[ConnectionRecord]) -> None:
        ttl = _ttl()
        await asyncio.gather(get_members().touch(connection_ids, ttl), get_monitor().upsert(records, ttl))

    async def _run(self) -> None:
        """Sleep a third of the lease, then renew, while the loop serves connections; one last
        round when the last one closed (its delivery counts), then end."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _ttl() / 3)
            self._wake.clear()
            await self.renew()
            if not self.connections:
                return

    async def renew(self) -> None:
        """One round: every lease and record, this process's record, the delivery counts."""
        connections = list(self.connections.items())
        self._renewing = {c for c, _ in connections}
        try:
            await self._renew_some([c for c, _ in connections], [c.monitor_record() for _, c in connections])
        except Exception:
            logger.exception("Could not renew the presence of %d connection(s).", len(connections))
            hub_metrics().errors.labels(where="presence").inc()
        finally:
            self._renewing = set()
            closed, self._closed_while_renewing = self._closed_while_renewing, {}
        if closed:  # the round may have written them back after their close removed them
            try:
                await asyncio.gather(
                    *(get_members().vanish(c) for c in closed),
                    *(get_monitor().remove(c, hub) for c, hub in closed.items()),
                )
            except Exception:
                logger.exception("Could not remove %d closed connection(s) again.", len(closed))
                hub_metrics().errors.labels(where="presence").inc()
        await report_process(len(self.connections))


async def report_process(connections: int) -> None:
    """Write this process's record and hand its delivery counts to the per-minute figures; a
    failure is logged and counted (the counts are kept for the next round)."""
    identity = process_identity()
    try:
        await get_monitor().server_heartbeat(
            ServerRecord(
                server_id=identity.server_id,
                host=identity.host,
                pid=identity.pid,
                started_at=identity.started_at,
                last_seen=time.time(),
                connections=connections,
                breaker_state=get_breaker().state.value,
            ),
            _ttl(),
        )
        await flush_tally()
    except Exception:
        logger.exception("Could not report this process to the connection monitor.")
        hub_metrics().errors.labels(where="monitor_report").inc()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LocalConnections] = weakref.WeakKeyDictionary()


def local_connections() -> LocalConnections:
    """The running loop's ``LocalConnections``."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = LocalConnections()
    return found
