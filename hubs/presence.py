"""Presence leases of this server's connections, renewed together by one task per event loop.

A hub connection registers when its handshake succeeds and unregisters when it closes. While any
are registered, a task renews all their leases in one call every ``PRESENCE_TTL / 3`` seconds
(``hubs.delivery.members``: Redis keys with an expiry, or memory). A process that dies stops
renewing, so its connections stop counting as alive after ``PRESENCE_TTL``: reconnect
redelivery and the retry pass then move what they owe to the user's new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from .conf import conduit_settings
from .delivery.members import get_members
from .metrics import hub_metrics

logger = logging.getLogger(__name__)


class LocalConnections:
    """The connections of one event loop (one server process) and their lease renewal task."""

    def __init__(self) -> None:
        self.connection_ids: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def register(self, connection_id: str) -> None:
        """Record the connection and take its lease now (before it can be counted as gone)."""
        self.connection_ids.add(connection_id)
        await get_members().touch([connection_id], float(conduit_settings.PRESENCE_TTL))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._renew(), name="conduit-presence")

    def forget(self, connection_id: str) -> None:
        """Stop renewing the connection's lease (synchronous: the first thing a closing
        connection does, so a teardown cut short can never leave a lease renewed forever)."""
        self.connection_ids.discard(connection_id)
        if not self.connection_ids:
            self._wake.set()  # the renewal task ends instead of sleeping on

    async def unregister(self, connection_id: str) -> None:
        """Forget the connection and end its lease now."""
        self.forget(connection_id)
        await get_members().vanish(connection_id)

    async def _renew(self) -> None:
        while self.connection_ids:
            ttl = float(conduit_settings.PRESENCE_TTL)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), ttl / 3)
            if not self.connection_ids:
                return
            try:
                await get_members().touch(list(self.connection_ids), ttl)
            except Exception:
                logger.exception(
                    "Could not renew the presence of %d connection(s).", len(self.connection_ids)
                )
                hub_metrics().errors.labels(where="presence").inc()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LocalConnections] = weakref.WeakKeyDictionary()


def local_connections() -> LocalConnections:
    """The running loop's ``LocalConnections``."""
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = LocalConnections()
    return found
