"""``KeepAliveSchedule``: the keep-alive of every connection of one event loop, by one task.

For each connection it watches (``watch``, from the moment the WebSocket is accepted):

- a handshake that has not come ``HANDSHAKE_TIMEOUT`` seconds after the accept fails with
  ASP.NET's "Handshake was canceled.";
- once the handshake succeeded, a Ping goes out whenever nothing was sent for
  ``KEEP_ALIVE_INTERVAL``, and a client silent for ``CLIENT_TIMEOUT`` (counted once it has sent
  its first Ping, as ASP.NET does) is closed with ASP.NET's text and told it may reconnect.

A sweep every ``min(1 s, KEEP_ALIVE_INTERVAL / 4, CLIENT_TIMEOUT / 4)`` does it all, instead of
a task and a timer per connection, and looks only at the connections with something due: each
is kept in a heap by the moment its next deadline comes (its handshake deadline, then the next
Ping, or the client timeout once it pinged), so an idle connection is looked at once per
``KEEP_ALIVE_INTERVAL``, not once per sweep. A deadline only moves later as records come and
go, so a connection looked at early is simply put back at its new deadline. A Ping goes out
within one sweep after it is due. The task ends with the loop's last connection. Times come
from each connection's own clock (``Hub.clock``; the connections of one loop share it).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Callable

from .conf import conduit_settings
from .metrics import hub_metrics
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
        #: Each watched session: the moment it was accepted, its label for the log, and the
        #: number of its entry in the heap (an entry with another number is stale).
        self._sessions: dict[ProtocolSession, tuple[float, Callable[[], str], int]] = {}
        #: (next deadline, entry number, session), the soonest first.
        self._due: list[tuple[float, int, ProtocolSession]] = []
        self._entries = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def watch(self, session: ProtocolSession, accepted_at: float, label: Callable[[], str]) -> None:
        """Keep ``session`` alive from now on (its WebSocket was accepted at ``accepted_at`` on
        its clock); ``label()`` names it in the log. Called when the WebSocket is accepted."""
        self._schedule(session, accepted_at, label, accepted_at + first_look())
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="conduit-keep-alive")

    def unwatch(self, session: ProtocolSession) -> None:
        """Stop watching ``session``; called when its connection closes. Its heap entry is
        dropped when it comes due."""
        self._sessions.pop(session, None)

    def _schedule(
        self, session: ProtocolSession, accepted_at: float, label: Callable[[], str], due: float
    ) -> None:
        entry = next(self._entries)
        self._sessions[session] = (accepted_at, label, entry)
        heapq.heappush(self._due, (due, entry, session))

    async def _run(self) -> None:
        while self._sessions:
            await asyncio.sleep(sweep_interval())
            await self.sweep()
        self._due.clear()

    async def sweep(self) -> None:
        """One round over the connections whose deadline came: fail late handshakes, close
        silent clients, ping idle ones, and put the others back at their next deadline. A
        failure is logged and counted; the sweep goes on with the next."""
        interval = float(conduit_settings.KEEP_ALIVE_INTERVAL)
        timeout = float(conduit_settings.CLIENT_TIMEOUT)
        handshake = float(conduit_settings.HANDSHAKE_TIMEOUT)
        later: list[tuple[ProtocolSession, float]] = []
        while self._due:
            due, entry, session = self._due[0]
            watched = self._sessions.get(session)
            if watched is None or watched[2] != entry or session.closed:
                heapq.heappop(self._due)
                if watched is not None and watched[2] == entry:
                    del self._sessions[session]
                continue
            now = session.clock()
            if due > now:
                break
            heapq.heappop(self._due)
            accepted_at, label, _ = watched
            try:
                if session.protocol is None:
                    if now - accepted_at >= handshake:
                        del self._sessions[session]
                        await session.fail_handshake(HANDSHAKE_CANCELED)
                    else:
                        later.append((session, min(accepted_at + handshake, now + interval)))
                    continue
                if session.client_pinged and now - session.last_received >= timeout:
                    del self._sessions[session]
                    logger.info("%s timed out.", label())
                    await session.close_with(CLIENT_TIMEOUT_ERROR, allow_reconnect=True)
                    continue
                if now - session.last_sent >= interval:
                    await session.ping()
                later.append((session, next_deadline(session, interval, timeout)))
            except Exception:
                logger.exception("%s: keep-alive failed.", label())
                hub_metrics().errors.labels(where="keep_alive").inc()
                later.append((session, now + interval))
        for session, due in later:
            watched = self._sessions.get(session)
            if watched is not None and not session.closed:
                self._schedule(session, watched[0], watched[1], due)


def first_look() -> float:
    """Seconds after the accept at which a connection is first looked at: its handshake
    deadline, or sooner if its first Ping could be due before (the handshake is not announced
    to the schedule; the look finds it done)."""
    return min(float(conduit_settings.HANDSHAKE_TIMEOUT), float(conduit_settings.KEEP_ALIVE_INTERVAL))


def next_deadline(session: ProtocolSession, interval: float, timeout: float) -> float:
    """When a handshaken ``session`` next needs looking at: its next Ping, or its client's
    timeout once the client has pinged, whichever comes first."""
    ping = session.last_sent + interval
    silence = session.last_received + timeout if session.client_pinged else math.inf
    return min(ping, silence)
