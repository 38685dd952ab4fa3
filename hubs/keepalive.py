"""``KeepAlive``: a connection's keep-alive pings and client timeout.

A Ping goes out whenever nothing was sent for ``KEEP_ALIVE_INTERVAL``; a client silent for
``CLIENT_TIMEOUT`` (counted once it has sent its first Ping, as ASP.NET does) is closed with
ASP.NET's text and told it may reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .conf import conduit_settings
from .protocol import PingMessage
from .session import ProtocolSession

logger = logging.getLogger(__name__)

CLIENT_TIMEOUT_ERROR = "Server timeout elapsed without receiving a message from the client."


class KeepAlive:
    """The timer of one connection; ``run`` is its task (started after the handshake)."""

    def __init__(
        self, session: ProtocolSession, clock: Callable[[], float], label: Callable[[], str]
    ) -> None:
        self._session = session
        self._clock = clock
        self._label = label  # "hub: connection id", for the log

    async def run(self) -> None:
        session = self._session
        interval = conduit_settings.KEEP_ALIVE_INTERVAL
        timeout = conduit_settings.CLIENT_TIMEOUT
        while not session.closed:
            due = session.last_sent + interval
            if session.client_pinged:
                due = min(due, session.last_received + timeout)
            await asyncio.sleep(max(0.0, due - self._clock()))
            now = self._clock()
            if session.client_pinged and now - session.last_received >= timeout:
                logger.info("%s timed out.", self._label())
                await session.close_with(CLIENT_TIMEOUT_ERROR, allow_reconnect=True)
                return
            if now - session.last_sent >= interval:
                await session.write(PingMessage())
