"""Admission control: how many connection attempts a server process takes, and how many
connections it and each user may hold, so that a reconnect storm (a restarted server handing all
its clients back at once) is spread out instead of served late to everyone.

Three limits, each a setting (0 turns it off):

- ``CONNECT_RATE`` attempts per second per process, ``CONNECT_BURST`` at once above it (a token
  bucket on the loop's clock). An attempt is a negotiate, or a WebSocket that comes without one
  (``skipNegotiation``); the WebSocket that claims a negotiated connection was admitted with it.
- ``MAX_CONNECTIONS`` open connections per process (those whose handshake succeeded: the loop's
  ``hubs.presence.LocalConnections``; attempts in flight may overshoot it by at most the burst).
- ``MAX_CONNECTIONS_PER_USER`` open connections of one user in one hub namespace, counted over
  all processes from the membership registry (connections whose presence lease holds; when it
  cannot be read, the attempt is let through, logged and counted). Checked at negotiate and at a
  WebSocket without one; a user's attempts in flight at the same moment are
  not counted yet, so concurrent attempts may overshoot it by their number.

A refused attempt gets ``Refusal``: negotiate answers 503 with ``Retry-After`` (and the seconds in
the JSON body, ``retryAfter``, where the official clients put it in their error message); a
WebSocket is answered its handshake and then a Close with the error and ``allowReconnect: true``.
The retry delay grows with the crowd: the ``n``-th attempt a process refuses in the current
second at rate ``r`` is asked to wait ``ceil(n / r)`` seconds (at most ``MAX_RETRY_AFTER``), the
time the rate needs to take those before it; clients add jitter (the JS helper waits between
that and twice that). Each refusal is counted
(``conduit_admission_refused_total``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .conf import conduit_settings
from .delivery.members import get_members
from .metrics import hub_metrics
from .naming import user_channel

logger = logging.getLogger(__name__)

#: The longest ``Retry-After`` a refusal asks for (seconds).
MAX_RETRY_AFTER = 60
#: ``Retry-After`` for a refusal by a cap (connections, user): they do not drain by the second.
CAP_RETRY_AFTER = 5


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt was refused, the client's error text, and when to try again (seconds)."""

    reason: str  # "rate", "connections" or "user"
    error: str
    retry_after: int


class Admission:
    """The admission state of one event loop (one server process): ``runtime().loop().admission``."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, open_connections: Callable[[], int] = lambda: 0
    ) -> None:
        #: Monotonic seconds (tests may replace it).
        self.clock = clock
        self._open_connections = open_connections  # the loop's (``hubs.presence``)
        self._tokens: float | None = None  # full at first use
        self._filled_at = 0.0
        self._second = -1
        self._refused_this_second = 0

    def take_attempt(self) -> Refusal | None:
        """Count one connection attempt against ``CONNECT_RATE``; a refusal when over it."""
        rate = float(conduit_settings.CONNECT_RATE)
        if rate <= 0:
            return None
        burst = max(1.0, float(conduit_settings.CONNECT_BURST))
        now = self.clock()
        tokens = burst if self._tokens is None else min(burst, self._tokens + (now - self._filled_at) * rate)
        self._filled_at = now
        if tokens >= 1.0 - 1e-9:  # clock arithmetic in floats
            self._tokens = tokens - 1.0
            return None
        self._tokens = tokens
        second = math.floor(now)
        if second != self._second:
            self._second, self._refused_this_second = second, 0
        self._refused_this_second += 1
        retry_after = min(MAX_RETRY_AFTER, max(1, math.ceil(self._refused_this_second / rate)))
        return Refusal("rate", "The server is busy: too many connection attempts.", retry_after)

    @staticmethod
    def connections_refusal(open_connections: int) -> Refusal | None:
        """A refusal when ``open_connections`` reached ``MAX_CONNECTIONS``."""
        cap = int(conduit_settings.MAX_CONNECTIONS)
        if cap > 0 and open_connections >= cap:
            return Refusal("connections", "The server is busy: too many connections.", CAP_RETRY_AFTER)
        return None

    @staticmethod
    async def user_refusal(namespace: str, user_id: str | None) -> Refusal | None:
        """A refusal when ``user_id`` holds ``MAX_CONNECTIONS_PER_USER`` live connections in
        ``namespace`` (anonymous clients have no cap: ``CONNECT_RATE`` holds them)."""
        cap = int(conduit_settings.MAX_CONNECTIONS_PER_USER)
        if cap <= 0 or user_id is None:
            return None
        try:
            live = await get_members().resolve_alive([user_channel(namespace, user_id)])
        except Exception:
            # The registry cannot be read: let the attempt through (the rate still holds).
            logger.exception("Admission: could not count the connections of user %s.", user_id)
            hub_metrics().errors.labels(where="admission").inc()
            return None
        if len(live) >= cap:
            return Refusal("user", f"Too many connections for this user (at most {cap}).", CAP_RETRY_AFTER)
        return None

    async def admit(
        self, *, hub: str, namespace: str, user_id: str | None, door: str, new: bool
    ) -> Refusal | None:
        """Check one attempt of ``user_id`` to hub ``hub``: a new attempt (``new``) against every
        limit, the WebSocket of a negotiated connection against ``MAX_CONNECTIONS`` only; the
        refusal is counted under ``door``."""
        refusal = self.connections_refusal(self._open_connections())
        if refusal is None and new:
            refusal = self.take_attempt() or await self.user_refusal(namespace, user_id)
        if refusal is not None:
            hub_metrics().child(hub_metrics().admission_refused, hub, refusal.reason, door).inc()
        return refusal
