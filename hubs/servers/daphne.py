"""``ReapingServer``: daphne's ``Server`` without its once-a-second walk over every connection.

Daphne keeps one entry per connection and, every second, walks all of them
(``Server.application_checker``) to reap the application instances that finished and to cancel
those still running ``application_close_timeout`` seconds after their client left; every two
seconds it walks them again (``timeout_checker``) for the WebSocket handshake, ping and lifetime
timeouts. At 5,000 idle connections the two walks were a third of the process's CPU
(docs/roadmap.md, issue 11).

Here each connection is reaped when something happens to it, with daphne's outcome:

- when its application instance finishes (a done-callback): an exception is logged as daphne
  logs it ("Exception inside application") and, if the client is still there, handed to the
  protocol (a 500, or the WebSocket closed); the entry goes once the client has left too;
- when its client leaves (``protocol_disconnected``): the entry goes at once if its application
  has finished, else a timer cancels the application ``application_close_timeout`` seconds later
  (daphne's warning "took too long to shut down and was killed" kept word for word).

autobahn (daphne's WebSocket layer) pretty-prints its whole configuration for a debug line on
every new WebSocket, logged or not: 7 % of a connect's CPU in a storm. ``run`` makes that text
lazy (``LazyFormat``): it is built only if the line is written.

The timeout walk runs over the connections that can still time out: with daphne's ping and
lifetime timeouts and the HTTP timeout off (as ``manage.py serve`` runs it), only a WebSocket in
its opening handshake can, so only the connections of the last ``websocket_connect_timeout``
seconds are walked. With any of those options on, daphne's own walk runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import pprint
import sys
import time
from collections import deque
from concurrent.futures import CancelledError
from typing import Any

from daphne.server import Server

from hubs.logging import RedactingStream

from . import max_message_size

logger = logging.getLogger("daphne.server")

#: Seconds between two timeout walks (daphne's).
TIMEOUT_CHECK_INTERVAL = 2.0


class LazyFormat:
    """``pprint.pformat(value)``, made only when the log line holding it is written."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __str__(self) -> str:
        return pprint.pformat(self._value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def lazy_autobahn_debug_lines() -> None:
    """Make ``pformat`` lazy in ``autobahn.websocket.protocol``, where it builds debug-line
    arguments, and keep the one place that returns its text (``Timings.__str__``) returning
    a string (``tests/unit/test_daphne_reaping.py`` checks that these are its only uses)."""
    import autobahn.websocket.protocol as protocol

    if protocol.pformat is LazyFormat:  # type: ignore[attr-defined]
        return
    protocol.pformat = LazyFormat  # type: ignore[attr-defined]
    protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)  # type: ignore[method-assign]


class ReapingServer(Server):  # type: ignore[misc]  # daphne is untyped
    """Daphne's server, reaping each connection on its own events instead of by polling."""

    def run(self) -> None:
        """Start serving (blocks until the reactor stops)."""
        lazy_autobahn_debug_lines()
        super().run()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: daphne's own table (``run`` sets it up again): protocol -> its application and times.
        self.connections: dict[Any, dict[str, Any]] = {}
        #: (connected at, protocol) of the connections that may still be in their handshake.
        self._young: deque[tuple[float, Any]] = deque()

    # -- daphne's hooks ------------------------------------------------------------------------

    def protocol_connected(self, protocol: Any) -> None:
        """Called by daphne when a request or a WebSocket arrives."""
        super().protocol_connected(protocol)
        self._young.append((time.monotonic(), protocol))

    def protocol_disconnected(self, protocol: Any) -> None:
        """Called by daphne when a client leaves (or an HTTP request finishes or is upgraded);
        may be called more than once for one protocol."""
        details = self.connections.get(protocol)
        if details is None or "disconnected" in details:
            return
        details["disconnected"] = time.time()
        instance: asyncio.Future[Any] | None = details.get("application_instance")
        if instance is None:
            del self.connections[protocol]
        elif not instance.done():
            details["kill_timer"] = instance.get_loop().call_later(
                self.application_close_timeout, self._kill, protocol, instance
            )

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        """Called by daphne to start a connection's application; reaps it when it finishes."""
        queue = super().create_application(protocol, scope)
        details = self.connections.get(protocol)
        if details is not None and "application_instance" in details:
            instance: asyncio.Future[Any] = details["application_instance"]
            instance.add_done_callback(lambda done: self._reap(protocol, done))
        return queue

    def application_checker(self) -> None:
        """Daphne's once-a-second walk, started by ``run``: not needed, reaping is event driven."""

    def timeout_checker(self) -> None:
        """Every two seconds: the timeouts of the connections that can still time out."""
        from twisted.internet import reactor

        horizon = time.monotonic() - self.websocket_connect_timeout - TIMEOUT_CHECK_INTERVAL
        while self._young and self._young[0][0] < horizon:
            self._young.popleft()
        walked = list(self.connections) if self._all_can_time_out() else [p for _, p in self._young]
        for protocol in walked:
            if protocol in self.connections:
                protocol.check_timeouts()
        reactor.callLater(TIMEOUT_CHECK_INTERVAL, self.timeout_checker)

    def kill_all_applications(self) -> Any:
        """Called by daphne before the reactor stops: cancel the applications still running
        (daphne's own fails on a connection whose application already finished)."""
        from twisted.internet import defer

        running = [
            details["application_instance"]
            for details in self.connections.values()
            if "application_instance" in details and not details["application_instance"].done()
        ]
        for instance in running:
            instance.cancel()
        logger.info("Killed %i pending application instances", len(running))
        waited = defer.Deferred.fromFuture(asyncio.gather(*running))
        waited.addErrback(lambda _: None)
        return waited

    # -- reaping -------------------------------------------------------------------------------

    def _all_can_time_out(self) -> bool:
        """Whether daphne's options let any connection time out after its handshake."""
        return (
            bool(self.http_timeout)
            or self.websocket_timeout >= 0
            or not math.isinf(float(self.ping_interval))
        )

    def _reap(self, protocol: Any, instance: asyncio.Future[Any]) -> None:
        """The application instance of ``protocol`` finished: report how, as daphne does."""
        details = self.connections.get(protocol)
        if details is None or details.get("application_instance") is not instance:
            return
        disconnected = details.get("disconnected")
        try:
            exception = instance.exception()
        except (CancelledError, asyncio.CancelledError):
            exception = None
        if exception is not None:
            if isinstance(exception, KeyboardInterrupt):
                self.stop()
            else:
                logger.error("Exception inside application: %s", exception, exc_info=exception)
                if not disconnected:
                    protocol.handle_exception(exception)
        del details["application_instance"]
        timer = details.pop("kill_timer", None)
        if timer is not None:
            timer.cancel()
        if disconnected:
            del self.connections[protocol]

    def _kill(self, protocol: Any, instance: asyncio.Future[Any]) -> None:
        """``application_close_timeout`` after its client left, the application still runs."""
        if not instance.done():
            logger.warning(
                "Application instance %r for connection %s took too long to shut down and was killed.",
                instance,
                repr(protocol),
            )
            instance.cancel()


def serve_daphne(application: Any, options: dict[str, Any]) -> None:
    """Run daphne (``ReapingServer``) on ``options["host"]:options["port"]`` until stopped."""
    from daphne.access import AccessLogGenerator
    from daphne.endpoints import build_endpoint_description_strings

    ReapingServer(
        application=application,
        endpoints=build_endpoint_description_strings(host=options["host"], port=options["port"]),
        action_logger=None if options["no_access_log"] else AccessLogGenerator(RedactingStream(sys.stdout)),
        websocket_max_message_size=max_message_size(),
        websocket_max_frame_size=max_message_size(),
        websocket_handshake_timeout=5,
        application_close_timeout=10,
        # SignalR has its own keep-alive (Ping messages both ways, CLIENT_TIMEOUT). Daphne's
        # protocol-level pings are off by default: signalrcore treats ping frames as data and
        # never answers them, so daphne would drop it after ping_timeout.
        ping_interval=options["ws_ping_interval"] or math.inf,
        ping_timeout=30,
        # No cap on a connection's lifetime (daphne's default closes after 24 h).
        websocket_timeout=-1,
    ).run()
