"""``KeepAliveSchedule``: the keep-alive of every connection of one event loop, by one task.

For each connection it watches (``watch``, from the moment the WebSocket is accepted):

- a handshake that has not come ``HANDSHAKE_TIMEOUT`` seconds after the accept fails with
  ASP.NET's "Handshake was canceled.";
- once the handshake succeeded, a Ping goes out whenever nothing was sent for
  ``KEEP_ALIVE_INTERVAL``, and a client silent for ``CLIENT_TIMEOUT`` (counted once it has sent
  its first Ping, as ASP.NET does) is closed with ASP.NET's text and told it may reconnect.

One sweep of the loop's connections every ``min(1 s, KEEP_ALIVE_INTERVAL / 4, CLIENT_TIMEOUT /
4)`` does it all, instead of a task and a timer per connection: a Ping goes out within one sweep
after it is due. The task ends with the loop's last connection. Times come from each
connection's own clock (``Hub.clock``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .conf import conduit_settings
from .metrics import hub_metrics
from .protocol import PingMessage
from .protocol.handshake import HANDSHAKE_CANCELED
from .session import ProtocolSession

logger = logging.getLogger(__name__)

CLIENT_TIMEOUT_ERROR = "Server timeout elapsed without receiving a message from the client."
#: The longest time between two sweeps (seconds).
MAX_SWEEP_INTERVAL = 1.0


def sweep_interval() -> float:
    """Seconds between two sweeps for the current settings."""
    return max(
        0.005,
        min(
            MAX_SWEEP_INTERVAL,
            float(conduit_settings.KEEP_ALIVE_INTERVAL) / 4,
            float(conduit_settings.CLIENT_TIMEOUT) / 4,
            float(conduit_settings.HANDSHAKE_TIMEOUT) / 4,
        ),
    )


class KeepAliveSchedule:
    """The watched connections of one loop (``runtime().loop().keep_alive``) and their sweep."""

    def __init__(self) -> None:
        #: Each watched session, with the moment it was accepted and its label for the log.
        self._sessions: dict[ProtocolSession, tuple[float, Callable[[], str]]] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def watch(self, session: ProtocolSession, accepted_at: float, label: Callable[[], str]) -> None:
        """Keep ``session`` alive from now on (its WebSocket was accepted at ``accepted_at`` on
        its clock); ``label()`` names it in the log."""
        self._sessions[session] = (accepted_at, label)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="conduit-keep-alive")

    def unwatch(self, session: ProtocolSession) -> None:
        """Stop watching ``session`` (its connection closed)."""
        self._sessions.pop(session, None)

    async def _run(self) -> None:
        while self._sessions:
            await asyncio.sleep(sweep_interval())
            await self.sweep()

    async def sweep(self) -> None:
        """One round over the watched connections: fail late handshakes, close silent clients,
        ping idle ones. A failure is logged and counted; the sweep goes on with the next."""
        interval = float(conduit_settings.KEEP_ALIVE_INTERVAL)
        timeout = float(conduit_settings.CLIENT_TIMEOUT)
        handshake = float(conduit_settings.HANDSHAKE_TIMEOUT)
        for session, (accepted_at, label) in list(self._sessions.items()):
            if session.closed:
                self._sessions.pop(session, None)
                continue
            try:
                now = session.clock()
                if session.protocol is None:
                    if now - accepted_at >= handshake:
                        self._sessions.pop(session, None)
                        await session.fail_handshake(HANDSHAKE_CANCELED)
                elif session.client_pinged and now - session.last_received >= timeout:
                    self._sessions.pop(session, None)
                    logger.info("%s timed out.", label())
                    await session.close_with(CLIENT_TIMEOUT_ERROR, allow_reconnect=True)
                elif now - session.last_sent >= interval:
                    await session.write(PingMessage())
            except Exception:
                logger.exception("%s: keep-alive failed.", label())
                hub_metrics().errors.labels(where="keep_alive").inc()
