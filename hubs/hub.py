"""``Hub`` and ``SecureHub``: Channels consumers that speak the SignalR hub protocol.

A hub subclass declares client-callable methods with ``@hub_method`` and may override the
lifecycle hooks. One instance serves one WebSocket connection:

1. ``websocket.connect``: origin, user and negotiated connection id are checked
   (``hubs.accept``), then ``authorize(context)`` runs; a refusal closes before accept (HTTP 403).
2. The handshake (JSON text, or bytes for MessagePack clients) picks the protocol
   (``hubs.session``); the reply goes out, the connection joins its system groups
   (``hubs.membership``), then ``on_connection_established(context)`` runs.
3. Invocations run one at a time per connection in a worker task (``hubs.invoker``), so the
   receive loop and channel-layer deliveries (``hubs.inbox``) never wait for hub code; streaming
   invocations run beside them.
4. The loop's keep-alive schedule (``hubs.keepalive``, one task for all connections) fails a
   handshake that does not come, pings whenever nothing was sent for ``KEEP_ALIVE_INTERVAL``
   and closes clients silent for ``CLIENT_TIMEOUT``.
5. On disconnect, tasks are cancelled, groups left, then ``on_connection_lost(context, exc)`` runs.

The class itself is thin: it composes those parts, each one concept in its own module, and offers
hub code the documented names only (``docs/hubs.md``, "What a hub offers").

Every hub answers ``AcknowledgeMessage(messageId)``, ``AcknowledgeMessages(messageIds)`` and
``NackMessage(messageId, reason)`` for acknowledged sends (``docs/delivery.md``); they are handled
as they arrive, not queued behind a running invocation, so hub code can
``await self.send_with_confirmation(...)``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from .accept import open_connection
from .background import Background
from .clients import HubClients
from .confirmations import Confirmations
from .context import ConnectionContext
from .delivery import receipts
from .delivery.history import Replay
from .delivery.retry import adopt_and_redeliver
from .delivery.runner import ensure_embedded_runner
from .errors import HubDenied, InvalidArguments, ServerBusy
from .inbox import Inbox
from .invoker import Invoker
from .membership import HubGroups, Membership
from .methods import MethodSpec, collect_methods, hub_method
from .metrics import hub_metrics
from .protocol import (
    CancelInvocationMessage,
    CloseMessage,
    HandshakeError,
    HubMessage,
    InvocationMessage,
    MessageTooLargeError,
    PingMessage,
    ProtocolError,
    StreamInvocationMessage,
)
from .runtime import local_keep_alive
from .session import ProtocolSession

logger = logging.getLogger(__name__)

#: Seconds a closing connection waits for its tasks to stop before it releases the rest.
_TEARDOWN_WAIT = 5.0
#: Most message ids one AcknowledgeMessages call may carry.
MAX_ACK_BATCH = 1000


class ConnectionLost(Exception):
    """Passed to ``on_connection_lost`` when the socket closed abnormally."""


class Hub(AsyncConsumer):
    """Base class of SignalR hubs. Anonymous clients are allowed; see ``SecureHub``."""

    #: Name used in URLs, logs and metrics; default: the class name in kebab case without "Hub".
    hub_name: ClassVar[str | None] = None
    #: Hubs with the same namespace share groups and users (the demo's two task hubs do).
    group_namespace: ClassVar[str | None] = None
    #: Refuse clients that are not authenticated (at negotiate and at the WebSocket).
    require_authentication: ClassVar[bool] = False
    #: Channel layer alias.
    channel_layer_alias: ClassVar[str] = "default"
    #: Monotonic clock for the timers; tests may replace it.
    clock: ClassVar[Callable[[], float]] = staticmethod(time.monotonic)

    _methods: ClassVar[dict[str, MethodSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._methods = collect_methods(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The connection's facts (id, user, groups, counts); None until it was accepted.
        self.context: ConnectionContext | None = None
        #: Who to send to (``caller``, ``others``, ``group(...)``, ``user(...)``, ``all``).
        self.clients: HubClients | None = None
        #: This connection's hub groups (``add``, ``discard``).
        self.groups = HubGroups(lambda: self._membership)
        self._membership: Membership | None = None
        self._parts: _Parts | None = None

    # ----------------------------------------------------------------------------- class helpers

    @classmethod
    def get_hub_name(cls) -> str:
        """The hub's name (``hub_name``, else derived from the class name)."""
        if cls.hub_name:
            return cls.hub_name
        base = cls.__name__.removesuffix("Hub") or cls.__name__
        return re.sub(r"(?<!^)(?=[A-Z])", "-", base).lower()

    @classmethod
    def get_group_namespace(cls) -> str:
        """The namespace of the hub's groups and user channels."""
        return cls.group_namespace or cls.get_hub_name()

    # ----------------------------------------------------------------------------- hooks

    async def authorize(self, context: ConnectionContext) -> None:
        """Runs before the WebSocket is accepted; raise ``HubDenied`` to refuse the client."""

    async def on_connection_established(self, context: ConnectionContext) -> None:
        """Runs once the handshake succeeded, before any invocation of the client is handled.

        An exception here closes the connection with an error (and no reconnect advice).
        """

    async def on_connection_lost(self, context: ConnectionContext, exc: BaseException | None) -> None:
        """Runs after the connection closed and its groups were left.

        ``exc`` is None for a clean close (by either side), else what went wrong.
        """

    # ----------------------------------------------------------------------------- public API

    @property
    def connection_id(self) -> str | None:
        """The connection's id (None before it was accepted)."""
        return self.context.connection_id if self.context else None

    @property
    def user(self) -> Any:
        """The connection's user (None before it was accepted; ``AnonymousUser`` if anonymous)."""
        return self.context.user if self.context else None

    async def add_to_group_with_metadata(self, group: str, metadata: dict[str, Any]) -> None:
        """Join ``group`` and keep ``metadata`` with the membership (``context.groups``)."""
        await self.groups.add(group, metadata)

    async def abort(self, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        """Close this connection, telling the client ``error`` in a Close message."""
        if self._parts is not None:
            await self._parts.session.close_with(error, allow_reconnect=allow_reconnect)

    async def send_with_confirmation(
        self,
        method: str,
        payload: Any = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - the documented API (DESIGN.md)
        *,
        correlation_id: str | None = None,
    ) -> bool:
        """Send ``method(payload)`` to the caller and wait up to ``timeout`` seconds for its
        ``AcknowledgeMessage``. True if it acked in time, False otherwise (a ``NackMessage`` or
        a closed connection answers False at once). The pending entry is removed either way, and
        the message is not retried: the caller of this method decides what a False means.
        """
        parts = self._parts
        if self.context is None or parts is None or parts.session.closed:
            return False
        return await parts.confirmations.send(
            self.context.connection_id, self.context.user_id, method, payload, timeout, correlation_id
        )

    async def resume_group(
        self, group: str, last_seq: object, epoch: object = None, metadata: dict[str, Any] | None = None
    ) -> Replay:
        """Join ``group`` and send the caller what it missed after ``(epoch, last_seq)``, in order.

        Call it from a hub method (after checking the caller may see the group). Live events of the
        connection are held while the history is replayed, then sent, so the client sees the
        group's messages in ``seq`` order without duplicates. The result says whether the whole gap
        was recovered; when not, the caller needs a snapshot of the current state.
        """
        if not isinstance(last_seq, int) or isinstance(last_seq, bool) or last_seq < 0:
            raise InvalidArguments("lastSeq must be a non-negative integer.")
        if epoch is not None and not isinstance(epoch, str):
            raise InvalidArguments("epoch must be a string or null.")
        assert self.clients is not None
        assert self._parts is not None
        stream = self.clients.stream_of(group)
        return await self._parts.inbox.replay(
            stream, epoch, last_seq, lambda: self.groups.add(group, metadata)
        )

    @hub_method
    async def acknowledge_message(self, message_id: str) -> bool:
        """The client processed ``messageId``: clear this connection's pending entry.

        Idempotent; an unknown id is answered (False), not an error.
        """
        if not isinstance(message_id, str) or not message_id:
            raise InvalidArguments("messageId must be a non-empty string.")
        assert self.context is not None
        assert self._parts is not None
        cleared = await receipts.acknowledge(self.get_hub_name(), self.context.connection_id, message_id)
        self._parts.confirmations.confirm(message_id, True)
        return cleared

    @hub_method
    async def acknowledge_messages(self, message_ids: list[str]) -> int:
        """``AcknowledgeMessage`` for several messages in one call, for a client that received a
        burst (one frame instead of one per message). Answers how many were pending."""
        if (
            not isinstance(message_ids, list)
            or len(message_ids) > MAX_ACK_BATCH
            or not all(isinstance(m, str) and m for m in message_ids)
        ):
            raise InvalidArguments(f"messageIds must be a list of at most {MAX_ACK_BATCH} non-empty strings.")
        assert self.context is not None
        assert self._parts is not None
        hub, connection_id = self.get_hub_name(), self.context.connection_id
        cleared = await receipts.acknowledge_many(hub, connection_id, message_ids)
        for message_id in message_ids:
            self._parts.confirmations.confirm(message_id, True)
        return sum(cleared)

    @hub_method
    async def nack_message(self, message_id: str, reason: str | None = None) -> str:
        """The client refuses ``messageId`` (it could not process it): ``NACK_POLICY`` decides
        whether it is retried or becomes a dead letter. Answers what was done
        (``retry``, ``dead_letter``, or ``unknown`` for an id that is not pending)."""
        if not isinstance(message_id, str) or not message_id:
            raise InvalidArguments("messageId must be a non-empty string.")
        if reason is not None and not isinstance(reason, str):
            raise InvalidArguments("reason must be a string or null.")
        assert self.context is not None
        assert self._parts is not None
        if self._parts.confirmations.confirm(message_id, False):
            return "unknown"  # a send_with_confirmation: its caller gets False, nothing is retried
        return await receipts.nack(
            self.get_hub_name(), self.context.connection_id, message_id, (reason or "")[:500]
        )

    # ----------------------------------------------------------------------------- dispatch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve the connection: WebSocket events from ``receive`` are dispatched one by one.

        Unlike Channels' consumers, a hub has no channel of its own: channel-layer messages
        reach it through its process's router (``hubs.fanout``), which calls ``dispatch``. So a
        connection costs no receive task, and a channel-layer outage does not end it. When it
        ends without a disconnect (the server cancelled it, or a handler raised), what the
        connection holds is still released.
        """
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = None
        self.base_send = send
        self._parts = _Parts(self, send)
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except BaseException as exc:
            if not self._parts.torn_down:
                self._parts.session.closed = True
                hub_metrics().errors.labels(where="consumer_crashed").inc()
                logger.warning(
                    "%s: connection %s ended abnormally: %r", self.get_hub_name(), self.connection_id, exc
                )
                await asyncio.shield(
                    self._teardown(ConnectionLost(f"The server ended the connection: {exc!r}"))
                )
            raise

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route ASGI and layer messages to handlers.

        Unlike Channels' base consumer, this does not close old database connections before
        every message: deliveries never touch the database, and hub methods that do run through
        ``database_sync_to_async``, which manages connections around the call.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            hub_metrics().errors.labels(where="unknown_layer_message").inc()
            logger.warning("%s: no handler for message type %r.", self.get_hub_name(), message.get("type"))
            return
        await handler(message)

    # ----------------------------------------------------------------------------- ASGI events

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """The client asks to open the WebSocket: check it, accept, wait for its handshake."""
        parts = self._require_parts()
        try:
            context = await open_connection(
                self.scope,
                self.get_hub_name(),
                namespace=self.get_group_namespace(),
                require_authentication=self.require_authentication,
            )
            self.context = context
            self.clients = HubClients(
                hub_name=self.get_hub_name(),
                namespace=self.get_group_namespace(),
                layer_alias=self.channel_layer_alias,
                caller_id=context.connection_id,
                caller_writer=parts.session.write_outbound,
            )
            self._membership = Membership(self, context, parts.session)
            await self.authorize(context)
        except ServerBusy as exc:
            # Accepted only to answer its handshake with a Close it may reconnect from later.
            logger.info("%s: turned a connection away: %s", self.get_hub_name(), exc.message)
            parts.session.busy = exc.message
        except HubDenied as exc:
            logger.info("%s: refused a connection: %s", self.get_hub_name(), exc.message)
            await self._refuse()
            return
        except Exception:
            logger.exception("%s: error while accepting a connection.", self.get_hub_name())
            hub_metrics().errors.labels(where="connect").inc()
            await self._refuse()
            return
        await self.base_send({"type": "websocket.accept"})
        now = parts.session.last_received = parts.session.last_sent = self.clock()
        name = self.get_hub_name()
        local_keep_alive().watch(parts.session, now, lambda: f"{name}: client {self.connection_id}")

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        """A frame from the client: its handshake, then hub messages."""
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
        parts = self._require_parts()
        if data is None or parts.session.closed or (self.context is None and parts.session.busy is None):
            return
        parts.session.last_received = self.clock()
        try:
            if parts.session.protocol is None:
                await self._receive_handshake(data)
            else:
                await self._receive_messages(data)
        except Exception:
            logger.exception("%s: error while handling a client frame.", self.get_hub_name())
            hub_metrics().errors.labels(where="receive").inc()
            await parts.session.close_with("Connection closed with an error.", allow_reconnect=True)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """The socket closed (either side): release everything, then ``on_connection_lost``."""
        session = self._require_parts().session
        code = message.get("code")
        exc: BaseException | None = None
        if session.close_error:
            exc = ConnectionLost(session.close_error)
        elif not session.closed and code not in (1000, 1001, None):
            exc = ConnectionLost(f"WebSocket closed with status code {code}.")
        session.closed = True
        await self._teardown(exc)
        raise StopConsumer()

    # ----------------------------------------------------------------------------- layer events

    async def conduit_deliver(self, message: dict[str, Any]) -> None:
        """A server event from the channel layer: write this protocol's pre-encoded record.

        Delivered from the moment the connection joined its groups (right after the handshake
        answer), also while ``on_connection_established`` runs, as ASP.NET does.
        """
        if self._parts is not None:
            await self._parts.inbox.receive(message)

    async def conduit_group_add(self, message: dict[str, Any]) -> None:
        """Join a group on request of code outside this connection (``HubContext.groups``)."""
        if self._open_membership() is not None:
            await self.groups.add(message["group"], dict(message.get("metadata") or {}))

    async def conduit_group_discard(self, message: dict[str, Any]) -> None:
        """Leave a group on request of code outside this connection."""
        if self._open_membership() is not None:
            await self.groups.discard(message["group"])

    async def conduit_close(self, message: dict[str, Any]) -> None:
        """Close this connection on request of code outside it (admin, stale cleanup)."""
        await self.abort(message.get("error"), allow_reconnect=bool(message.get("allow_reconnect")))

    # ----------------------------------------------------------------------------- internals

    def _require_parts(self) -> _Parts:
        assert self._parts is not None, "a hub is served through __call__"
        return self._parts

    def _open_membership(self) -> Membership | None:
        parts = self._parts
        return self._membership if parts is not None and parts.session.open else None

    async def _refuse(self) -> None:
        self.context = None
        await self._require_parts().session.refuse()

    async def _receive_handshake(self, data: str | bytes) -> None:
        parts = self._require_parts()
        session = parts.session
        try:
            found = session.feed_handshake(data)
        except HandshakeError as exc:
            await session.fail_handshake(str(exc))
            return
        if found is None:
            return
        _, protocol, rest = found
        if session.busy is not None:
            await session.accept(protocol)
            await session.close_with(session.busy, allow_reconnect=True)
            return
        assert self.context is not None
        assert self._membership is not None
        self.context.protocol = protocol.name
        await session.accept(protocol)
        await self._membership.join_system_groups()
        try:
            await self.on_connection_established(self.context)
        except Exception:
            logger.exception("%s: on_connection_established failed.", self.get_hub_name())
            hub_metrics().errors.labels(where="on_connection_established").inc()
            await session.close_with("Connection closed with an error.", allow_reconnect=False)
            return
        parts.invoker.start()
        ensure_embedded_runner()
        if self.context.user_id is not None:
            parts.background.spawn(self._adopt_pending(self.context.user_id))
        if rest:
            await self._receive_messages(rest)

    async def _receive_messages(self, data: str | bytes) -> None:
        session = self._require_parts().session
        try:
            messages = session.decode(data)
        except MessageTooLargeError as exc:
            hub_metrics().protocol_errors.labels(hub=self.get_hub_name(), kind="too_large").inc()
            await session.close_with(str(exc), allow_reconnect=False)
            return
        except ProtocolError as exc:
            hub_metrics().protocol_errors.labels(hub=self.get_hub_name(), kind="invalid").inc()
            logger.info("%s: closing %s: invalid message: %s", self.get_hub_name(), self.connection_id, exc)
            await session.close_with(f"Connection closed with an error. Invalid message: {exc}")
            return
        for msg in messages:
            await self._handle_message(msg)
            if session.closed:
                return

    async def _handle_message(self, msg: HubMessage) -> None:
        parts = self._require_parts()
        if not isinstance(msg, PingMessage):
            assert self.context is not None
            self.context.messages_in += 1
            self.context.last_activity = time.time()
        if isinstance(msg, InvocationMessage | StreamInvocationMessage):
            await parts.invoker.handle(msg)
        elif isinstance(msg, CancelInvocationMessage):
            parts.invoker.cancel(msg.invocation_id)
        elif isinstance(msg, PingMessage):
            parts.session.client_pinged = True
        elif isinstance(msg, CloseMessage):
            await parts.session.close_socket()
        # Completions (client results), stream items (uploads), Ack and Sequence (stateful
        # reconnect) are features this server does not offer; they are ignored as ASP.NET
        # ignores what it does not expect.

    async def _adopt_pending(self, user_id: str) -> None:
        """Take over and receive what this user's vanished connections did not acknowledge."""
        assert self.context is not None
        try:
            await adopt_and_redeliver(user_id=user_id, connection_id=self.context.connection_id)
        except Exception:
            logger.exception(
                "%s: could not redeliver pending messages to a new connection.", self.get_hub_name()
            )
            hub_metrics().errors.labels(where="adopt_pending").inc()

    def _count_out(self, count: int) -> None:
        """Count hub messages sent (pings excluded) for the connection monitor."""
        if count and self.context is not None:
            self.context.messages_out += count
            self.context.last_activity = time.time()

    async def _teardown(self, exc: BaseException | None) -> None:
        """Release what the connection holds, then run ``on_connection_lost``.

        The release runs in a task of its own that a cancellation of the connection (daphne's
        kill after ``application_close_timeout``, a server shutdown) does not stop: cut short,
        it would leave memberships, a lease and a monitor record behind until the stale
        cleanup. The hook is the hub author's code and stays cancellable.
        """
        parts = self._require_parts()
        if parts.torn_down:
            return
        parts.torn_down = True
        await _uncancellable(self._release(parts))
        if self.context is not None and self._membership is not None and parts.session.protocol is not None:
            try:
                await self.on_connection_lost(self.context, exc)
            except Exception:
                logger.exception("%s: on_connection_lost failed.", self.get_hub_name())
                hub_metrics().errors.labels(where="on_connection_lost").inc()

    async def _release(self, parts: _Parts) -> None:
        """Part of ``_teardown``: stop the keep-alive, the lease renewals and the connection's
        tasks, leave every group and depart (registry, lease, monitor record). It may outlive
        its caller, so it raises to nobody: its errors are logged and counted."""
        try:
            local_keep_alive().unwatch(parts.session)
            membership = self._membership
            if self.context is not None and membership is not None:
                membership.stop_renewing()  # first: no more lease renewals
            await parts.background.stop(_TEARDOWN_WAIT)
            if self.context is None or membership is None:
                return
            await membership.leave_all()
            parts.confirmations.cancel_all()
        except Exception:
            logger.exception("%s: could not release a closed connection.", self.get_hub_name())
            hub_metrics().errors.labels(where="teardown").inc()


#: Releases running on after their connection was cancelled (the loop holds tasks weakly).
_RELEASES: set[asyncio.Task[None]] = set()


async def _uncancellable(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled (the caller still is)."""
    task = asyncio.get_running_loop().create_task(work)
    _RELEASES.add(task)
    task.add_done_callback(_RELEASES.discard)
    await asyncio.shield(task)


class _Parts:
    """What a ``Hub`` composes for its connection (made when it starts serving)."""

    __slots__ = ("background", "confirmations", "inbox", "invoker", "session", "torn_down")

    def __init__(self, hub: Hub, send: Any) -> None:
        name = hub.get_hub_name()
        self.session = ProtocolSession(send, hub_name=name, clock=hub.clock, count_out=hub._count_out)
        self.background = Background(name)
        self.invoker = Invoker(hub, self.session, self.background.spawn)
        self.inbox = Inbox(self.session, name, lambda: hub.connection_id)
        self.confirmations = Confirmations(self.session)
        self.torn_down = False


class SecureHub(Hub):
    """A hub that only authenticated users reach: refused at negotiate (401) and WebSocket (403).

    Users authenticate with the Django session, or a token (``Authorization: Bearer`` header or
    ``access_token`` query parameter) that a ``TOKEN_VALIDATORS`` entry accepts.
    """

    require_authentication = True
