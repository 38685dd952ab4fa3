"""``ProtocolSession``: one connection's wire: the handshake, the negotiated protocol, decoding the
client's frames, encoding and framing what goes out, and closing.

Owned by the ``Hub`` serving the connection; it never calls hub code. A record is never split
across frames; several records may share one (``write``). Every write goes through the
connection's ``Outbox`` (``hubs.outbox``): no writer ever waits for the client's socket, and what
the client has not read is bounded by ``OUTBOUND_QUEUE_BYTES``. Past it the connection is a slow
consumer: counted (``conduit_slow_consumers_total``), its backlog dropped, a Close with a clear
error and ``allowReconnect`` queued behind what the server already holds, and the connection
dropped ``SLOW_CONSUMER_GRACE`` seconds later if that did not go out. Its acknowledged messages
stay pending (they are resent after it reconnects); it resumes its streams from their history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .backpressure import transport_of
from .conf import conduit_settings
from .metrics import hub_metrics
from .outbound import Outbound
from .outbox import Outbox
from .protocol import (
    CloseMessage,
    HandshakeError,
    HandshakeParser,
    HandshakeRequest,
    HubMessage,
    HubProtocol,
    PingMessage,
    get_protocol,
    handshake_response,
)

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

SLOW_CONSUMER_ERROR = (
    "The connection was closed because the client did not read its messages fast enough; "
    "reconnect and resume."
)
#: Seconds a slow consumer's Close has to go out before the connection is dropped.
SLOW_CONSUMER_GRACE = 5.0


#: Each protocol's encoded Ping frame, by protocol name (``ProtocolSession.ping``).
_PING_FRAMES: dict[str, str | bytes] = {}


def _send_event(data: str | bytes) -> dict[str, Any]:
    """The ASGI ``websocket.send`` of one frame: text for a str, binary for bytes."""
    if isinstance(data, str):
        return {"type": "websocket.send", "text": data}
    return {"type": "websocket.send", "bytes": data}


class ProtocolSession:
    """The wire of one connection. ``send`` is the ASGI send callable; ``count_out`` is told how
    many hub messages (pings excluded) each write carried; ``clock`` is monotonic."""

    __slots__ = (
        "_clock",
        "_count_out",
        "_handshake",
        "_hub_name",
        "_send",
        "busy",
        "client_pinged",
        "close_error",
        "closed",
        "decoder",
        "last_received",
        "last_sent",
        "outbox",
        "protocol",
    )

    def __init__(
        self, send: Send, *, hub_name: str, clock: Callable[[], float], count_out: Callable[[int], None]
    ) -> None:
        self._send = send
        self._hub_name = hub_name
        self._clock = clock
        self._count_out = count_out
        self._handshake: HandshakeParser | None = HandshakeParser(max_size=conduit_settings.MAX_MESSAGE_SIZE)
        self.protocol: HubProtocol | None = None
        self.decoder: Any = None
        #: True once the socket is closed (by either side) or refused.
        self.closed = False
        #: The error this side closed with, if any (``on_connection_lost`` sees it).
        self.close_error: str | None = None
        self.last_sent = 0.0
        self.last_received = 0.0
        #: The client has sent a Ping: from then on its silence counts (``CLIENT_TIMEOUT``).
        self.client_pinged = False
        #: Admission control refused the connection: the error its handshake is closed with.
        self.busy: str | None = None
        self.outbox = Outbox(
            send,
            limit=int(conduit_settings.OUTBOUND_QUEUE_BYTES),
            transport=transport_of(send),
            on_full=self._slow_consumer,
            on_error=self._lost,
        )

    @property
    def clock(self) -> Callable[[], float]:
        """The connection's monotonic clock (``Hub.clock``)."""
        return self._clock

    @property
    def open(self) -> bool:
        """The handshake succeeded and the socket is not closed."""
        return self.protocol is not None and not self.closed

    # ----------------------------------------------------------------------------- handshake

    def feed_handshake(self, data: str | bytes) -> tuple[HandshakeRequest, HubProtocol, bytes] | None:
        """The client's handshake once complete (request, protocol, the bytes after it), else None.
        Raises ``HandshakeError`` for a malformed or unsupported one, with ASP.NET's text."""
        assert self._handshake is not None, "the handshake is over"
        parsed = self._handshake.feed(data)
        if parsed is None:
            return None
        request, rest = parsed
        protocol = get_protocol(request.protocol)
        if not protocol.is_version_supported(request.version):
            raise HandshakeError(
                f"The server does not support version {request.version} of the '{protocol.name}' protocol."
            )
        return request, protocol, rest

    async def accept(self, protocol: HubProtocol) -> None:
        """Use ``protocol`` from now on and answer the handshake."""
        self.protocol = protocol
        self.decoder = protocol.decoder(conduit_settings.MAX_MESSAGE_SIZE)
        self._handshake = None  # done with: the connection keeps no parser it will not use
        reply = handshake_response()
        await self.send_frame(reply if protocol.transfer_format == "Binary" else reply.decode("utf-8"))

    async def fail_handshake(self, error: str) -> None:
        """Answer the handshake with ``error`` and close."""
        logger.info("%s: handshake failed: %s", self._hub_name, error)
        hub_metrics().protocol_errors.labels(hub=self._hub_name, kind="handshake").inc()
        await self.send_frame(handshake_response(error).decode("utf-8"))
        self.close_error = error
        await self.close_socket()

    def decode(self, data: str | bytes) -> list[HubMessage]:
        """The whole records in ``data`` (a partial one is kept for the next frame). Raises
        ``MessageTooLargeError`` or ``ProtocolError`` for what the client must not send."""
        return self.decoder.feed(data)

    # ----------------------------------------------------------------------------- sending

    async def send_frame(self, data: str | bytes) -> None:
        """One WebSocket frame, text or binary."""
        if self.closed:
            return
        self.last_sent = self._clock()
        try:
            self.outbox.push(_send_event(data), len(data))
        except Exception as exc:  # noqa: BLE001 - logged and counted by _lost
            self._lost(exc)

    def _lost(self, exc: Exception) -> None:
        """A write found the socket closed by the peer (daphne raises autobahn's
        ``Disconnected``, uvicorn ``ClientDisconnected``): its disconnect event is on its way;
        nothing more is written."""
        self.closed = True
        self.outbox.abort()
        hub_metrics().errors.labels(where="send_after_close").inc()
        logger.info("%s: a write found the socket closed (%s).", self._hub_name, type(exc).__name__)

    def _slow_consumer(self) -> None:
        """The client's backlog passed ``OUTBOUND_QUEUE_BYTES`` (called by the outbox, once)."""
        if self.closed:
            return
        hub_metrics().child(hub_metrics().slow_consumers, self._hub_name).inc()
        logger.warning(
            "%s: closing a slow consumer (%d bytes not read).", self._hub_name, self.outbox.backlog()
        )
        self.outbox.clear()
        self.close_error = SLOW_CONSUMER_ERROR
        try:
            if self.protocol is not None:
                frame = self._frame(CloseMessage(error=SLOW_CONSUMER_ERROR, allow_reconnect=True))
                self.outbox.push(_send_event(frame), len(frame), force=True)
            self.outbox.push({"type": "websocket.close", "code": 1000}, 0, force=True)
        except Exception as exc:  # noqa: BLE001 - logged and counted by _lost
            self._lost(exc)
        self.closed = True
        transport = self.outbox.transport
        if transport is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(SLOW_CONSUMER_GRACE, self._drop_if_stuck, transport)

    def _drop_if_stuck(self, transport: Any) -> None:
        if transport.backlog() > 0 or self.outbox.queued:
            logger.info("%s: dropping a slow consumer whose close did not go out.", self._hub_name)
            self.outbox.abort()
            transport.abort()

    async def write(self, *messages: HubMessage) -> None:
        """Encode and send whole records in one frame."""
        if self.protocol is None or self.closed:
            return
        await self.send_frame(self._frame(*messages))
        self._count_out(sum(1 for m in messages if not isinstance(m, PingMessage)))

    async def ping(self) -> None:
        """A keep-alive Ping, sent by the keep-alive schedule: the protocol's Ping frame is
        encoded once per process, not once per Ping (thousands a second at 20,000 connections)."""
        protocol = self.protocol
        if protocol is None or self.closed:
            return
        frame = _PING_FRAMES.get(protocol.name)
        if frame is None:
            frame = _PING_FRAMES[protocol.name] = self._frame(PingMessage())
        await self.send_frame(frame)

    def _frame(self, *messages: HubMessage) -> str | bytes:
        """``messages`` encoded in the session's protocol, as one frame's data."""
        assert self.protocol is not None
        data = self.protocol.encode_many(messages)
        return data.decode("utf-8") if self.protocol.transfer_format == "Text" else data

    async def write_record(self, records: dict[str, str | bytes]) -> None:
        """Send a record encoded beforehand for every protocol (``Outbound.records``). Every
        delivery comes this way: it sends the frame itself rather than through ``send_frame``."""
        protocol = self.protocol
        if protocol is None or self.closed:
            return
        data = records[protocol.name]
        self.last_sent = self._clock()
        try:
            self.outbox.push(_send_event(data), len(data))
        except Exception as exc:  # noqa: BLE001 - logged and counted by _lost
            self._lost(exc)
            return
        self._count_out(1)

    async def pace(self) -> None:
        """Before each write of a burst the hub makes itself (a resume's replay): wait while the
        client has half of ``OUTBOUND_QUEUE_BYTES`` unread, up to ``SLOW_CONSUMER_GRACE``; a client
        that reads keeps up, one that does not then overflows as any slow consumer."""
        limit = self.outbox.limit
        if limit and not self.closed:
            with contextlib.suppress(TimeoutError):  # not read within the grace: write anyway
                async with asyncio.timeout(SLOW_CONSUMER_GRACE):
                    await self.outbox.drain(limit // 2)

    async def write_outbound(self, outbound: Outbound) -> None:
        """Send a server event encoded by ``encode_outbound``."""
        await self.write_record(outbound.records)

    # ----------------------------------------------------------------------------- closing

    async def close_with(self, error: str | None, *, allow_reconnect: bool = False) -> None:
        """Send a SignalR Close carrying ``error`` (once the handshake succeeded), then close."""
        if self.closed:
            return
        self.close_error = error
        if self.protocol is not None:
            await self.write(CloseMessage(error=error, allow_reconnect=allow_reconnect))
        await self.close_socket()

    async def close_socket(self) -> None:
        """Close the WebSocket (normal closure)."""
        if self.closed:
            return
        try:
            self.outbox.push({"type": "websocket.close", "code": 1000}, 0, force=True)
        except Exception as exc:  # noqa: BLE001 - logged and counted by _lost
            self._lost(exc)
        self.closed = True

    async def refuse(self) -> None:
        """Close before accepting: the client sees HTTP 403."""
        self.closed = True
        await self._send({"type": "websocket.close"})
