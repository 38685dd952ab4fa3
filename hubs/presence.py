"""Presence of this server's connections: leases and connection records, renewed by one task per loop.

A hub connection registers when its handshake succeeds and unregisters when it closes. While the
loop serves connections, a task renews every ``PRESENCE_TTL / 3`` seconds, for all of them at
once:

- their presence leases (``hubs.delivery.members``: who may receive acknowledged messages);
- their records (``hubs.records``: who is connected, with their counts and groups), sent to
  observers with the same lease (``hubs.signals.connections_renewed``; the ``monitoring`` app
  keeps them in its connection monitor): a record is made and sent only when the connection
  changed since its last one (a message in or out, a group joined or left, a new ping
  latency: ``Monitored.record_version``) or ``RECORD_REFRESH`` seconds after it, so a Redis that
  lost it gets it back; the leases of all of them are renewed every round;
- this process's own record (connection count, breaker state), with ``process_report``, when
  observers also take the messages it delivered and failed since the last round.

The task ends when the last connection closes, after one last round.

Closing connections depart together (``depart``): the registry removals, lease ends and the
``connections_closed`` notice of every connection that closes while the previous batch is being
written go in the next batch, one pipeline for all of them, so a disconnect storm of thousands
costs a few round trips instead of several per connection (and never waits past the pool).
A process that dies stops renewing, so its connections stop counting as alive after
``PRESENCE_TTL``: reconnect redelivery and the retry pass move what they owe to the user's new
connection, and the stale cleanup removes what they left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Protocol

from .conf import conduit_settings
from .delivery.breaker import get_breaker
from .delivery.members import get_members
from .metrics import hub_metrics
from .records import ConnectionRecord, ServerRecord
from .signals import (
    connection_changed,
    connection_opened,
    connections_closed,
    connections_renewed,
    notify,
    process_report,
)
from .tally import process_identity

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

logger = logging.getLogger(__name__)

#: The most connections one departure batch writes.
MAX_DEPARTURES = 500
#: An unchanged connection's record is sent again after this long anyway (seconds).
RECORD_REFRESH = 300.0


class Monitored(Protocol):
    """A connection as the presence loop sees it (its ``hubs.membership.Membership`` once its
    handshake succeeded)."""

    #: The hub class serving it: the ``sender`` of its signals.
    hub_class: type

    @property
    def hub_name(self) -> str:
        """The name of its hub (``ConnectionRecord.hub``)."""
        ...

    def monitor_record(self) -> ConnectionRecord:
        """The connection's current record (``hubs.records``)."""
        ...

    def record_version(self) -> Hashable:
        """A cheap value that changes whenever its record would (times aside)."""
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
        # Connections that closed, waiting for the next departure batch: (id, hub, channels, done).
        self._departing: list[tuple[str, str, Sequence[str], asyncio.Future[None]]] = []
        self._departures: asyncio.Task[None] | None = None
        # Each connection's record version observers last got, and when (monotonic seconds).
        self._reported: dict[str, tuple[Hashable, float]] = {}

    async def register(self, connection_id: str, connection: Monitored) -> None:
        """Record the connection, take its lease and tell observers it opened."""
        self.connections[connection_id] = connection
        ttl = _ttl()
        await asyncio.gather(
            get_members().touch([connection_id], ttl),
            notify(
                connection_opened,
                connection.hub_class,
                record=self._record(connection_id, connection),
                ttl=ttl,
            ),
        )
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="conduit-presence")

    async def refresh(self, connection_id: str, connection: Monitored) -> None:
        """Tell observers the connection changed now (it joined or left a group)."""
        record = self._record(connection_id, connection)
        await notify(connection_changed, connection.hub_class, record=record, ttl=_ttl())

    def _record(self, connection_id: str, connection: Monitored) -> ConnectionRecord:
        """The connection's record now, remembered as the last one observers got."""
        self._reported[connection_id] = (connection.record_version(), time.monotonic())
        return connection.monitor_record()

    def forget(self, connection_id: str) -> None:
        """Stop renewing the connection's lease (synchronous: the first thing a closing
        connection does, so a teardown cut short can never leave a lease renewed forever)."""
        self.connections.pop(connection_id, None)
        self._reported.pop(connection_id, None)
        if not self.connections:
            self._wake.set()  # the renewal task reports once more and ends

    async def depart(self, connection_id: str, hub: str, channels: Sequence[str]) -> None:
        """Forget the connection (it closed), remove its memberships of ``channels`` from the
        registry, end its lease and tell observers; returns once its batch is written (a failure
        is logged and counted there)."""
        self.forget(connection_id)
        if connection_id in self._renewing:
            self._closed_while_renewing[connection_id] = hub
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._departing.append((connection_id, hub, list(channels), done))
        if self._departures is None or self._departures.done():
            self._departures = loop.create_task(self._write_departures(), name="conduit-departures")
        await done

    async def _write_departures(self) -> None:
        """Write batches until none is waiting; what arrives meanwhile goes in the next one."""
        while self._departing:
            batch, self._departing = self._departing[:MAX_DEPARTURES], self._departing[MAX_DEPARTURES:]
            try:
                await asyncio.gather(
                    get_members().depart([(c, channels) for c, _, channels, _ in batch]),
                    notify(connections_closed, connections=[(c, hub) for c, hub, _, _ in batch]),
                )
            except Exception:
                logger.exception("Could not remove %d closed connection(s).", len(batch))
                hub_metrics().errors.labels(where="presence").inc()
            for *_, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _renew_some(self, connections: dict[str, str], records: list[ConnectionRecord]) -> None:
        ttl = _ttl()
        await asyncio.gather(
            get_members().touch(list(connections), ttl),
            notify(connections_renewed, records=records, connections=connections, ttl=ttl),
        )

    def _changed_records(self, connections: dict[str, Monitored]) -> list[ConnectionRecord]:
        """The records of the connections that changed since observers last got one (or got
        it ``RECORD_REFRESH`` seconds ago)."""
        now, reported, records = time.monotonic(), self._reported, []
        for connection_id, connection in connections.items():
            version = connection.record_version()
            last = reported.get(connection_id)
            if last is None or last[0] != version or now - last[1] >= RECORD_REFRESH:
                reported[connection_id] = (version, now)
                records.append(connection.monitor_record())
        return records

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
        # Snapshots as single objects: a list of 10,000 (id, connection) tuples alive through the
        # round's awaits is enough to set off a collection of the youngest generation.
        connections = dict(self.connections)
        self._renewing = set(connections)
        try:
            records = self._changed_records(connections)
            await self._renew_some({c: m.hub_name for c, m in connections.items()}, records)
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
                    notify(connections_closed, connections=list(closed.items())),
                )
            except Exception:
                logger.exception("Could not remove %d closed connection(s) again.", len(closed))
                hub_metrics().errors.labels(where="presence").inc()
        await report_process(len(self.connections))


async def report_process(connections: int) -> None:
    """Send this process's record to observers (``process_report``), who take its delivery
    counts then; their failures are logged and counted by ``notify``."""
    identity = process_identity()
    server = ServerRecord(
        server_id=identity.server_id,
        host=identity.host,
        pid=identity.pid,
        started_at=identity.started_at,
        last_seen=time.time(),
        connections=connections,
        breaker_state=get_breaker().state.value,
    )
    await notify(process_report, server=server, ttl=_ttl())
