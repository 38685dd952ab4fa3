"""``Hub`` and ``SecureHub``: Channels consumers that speak the SignalR hub protocol.

A hub subclass declares client-callable methods with ``@hub_method`` and may override the
lifecycle hooks. One instance serves one WebSocket connection:

1. ``websocket.connect``: origin, user and negotiated connection id are checked, then
   ``authorize(context)`` runs; a refusal closes before accept (HTTP 403).
2. The handshake (JSON text, or bytes for MessagePack clients) picks the protocol; the reply goes
   out, the connection joins its system groups, then ``on_connection_established(context)`` runs.
3. Invocations run one at a time per connection in a worker task, so the receive loop and
   channel-layer deliveries never wait for hub code; streaming invocations run beside them.
4. A keep-alive timer pings whenever nothing was sent for ``KEEP_ALIVE_INTERVAL`` and closes
   clients silent for ``CLIENT_TIMEOUT`` (counted from their first Ping).
5. On disconnect, tasks are cancelled, groups left, then ``on_connection_lost(context, exc)`` runs.

Every hub answers ``AcknowledgeMessage(messageId)`` and ``NackMessage(messageId, reason)`` for
acknowledged sends (``docs/delivery.md``); they are handled as they arrive, not queued behind a
running invocation, so hub code can ``await self.send_with_confirmation(...)``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser

from . import client_errors, connections
from .auth.resolve import InvalidToken, token_from_headers_and_query, user_from_token
from .clients import HubClients
from .conf import conduit_settings
from .context import ConnectionContext
from .delivery import receipts
from .delivery.history import Replay, get_history
from .delivery.members import get_members
from .delivery.pending import get_pending
from .delivery.retry import adopt_and_redeliver
from .delivery.runner import ensure_embedded_runner
from .delivery_metrics import record_delivery
from .errors import HubDenied, HubError, InvalidArguments, UnexpectedError
from .fanout import local_router
from .filters import HubInvocation, get_chain
from .methods import MethodSpec, collect_methods, hub_method
from .metrics import hub_metrics
from .naming import (
    all_channel,
    connection_channel,
    group_channel,
    user_channel,
    validate_group_name,
)
from .outbound import Outbound, encode_outbound
from .payloads import build_body, to_wire
from .presence import local_connections
from .protocol import (
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HandshakeError,
    HandshakeParser,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    MessageTooLargeError,
    PingMessage,
    ProtocolError,
    StreamInvocationMessage,
    StreamItemMessage,
    get_protocol,
    handshake_response,
)
from .rate_limit import client_key, get_limiter
from .records import ConnectionRecord
from .security import origin_allowed
from .tally import process_identity

logger = logging.getLogger(__name__)

_RECENT_IDS = 256
#: Seconds a closing connection waits for its tasks to stop before it releases the rest.
_TEARDOWN_WAIT = 5.0
#: Hub methods handled as they arrive instead of waiting in the invocation queue.
_INLINE_METHODS = frozenset({"acknowledgemessage", "acknowledgemessages", "nackmessage"})
#: Most message ids one AcknowledgeMessages call may carry.
MAX_ACK_BATCH = 1000


class ConnectionLost(Exception):
    """Passed to ``on_connection_lost`` when the socket closed abnormally."""


class HubGroups:
    """Group membership of the current connection (``self.groups`` in hub code)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def add(self, group: str, metadata: dict[str, Any] | None = None) -> None:
        """Join hub group ``group``; ``metadata`` is kept with the membership."""
        await self._hub._join_group(validate_group_name(group), dict(metadata or {}))

    async def discard(self, group: str) -> None:
        """Leave hub group ``group`` (no error if not a member)."""
        await self._hub._leave_group(validate_group_name(group))


class Hub(AsyncConsumer):
    """Base class of SignalR hubs. Anonymous clients are allowed; see ``SecureHub``."""

    #: Name used in URLs, logs and metrics; default: the class name in kebab case without "Hub".
    hub_name: ClassVar[str | None] = None
    #: Hubs with the same namespace share groups and users (``TaskHub`` and ``VideoGenerationHub``).
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
        self.context: ConnectionContext | None = None
        self.protocol: HubProtocol | None = None
        self.groups = HubGroups(self)
        self.clients: HubClients | None = None
        self._handshake = HandshakeParser(max_size=conduit_settings.MAX_MESSAGE_SIZE)
        self._decoder: Any = None
        self._established = False
        self._closed = False
        self._torn_down = False
        self._close_error: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams: dict[str, asyncio.Task[Any]] = {}
        self._client_cancelled: set[str] = set()
        self._invocations: asyncio.Queue[InvocationMessage] | None = None
        self._system_groups: list[str] = []
        self._recent_ids: deque[str] = deque(maxlen=_RECENT_IDS)
        self._recent_set: set[str] = set()
        self._held: list[dict[str, Any]] | None = None
        self._confirmations: dict[str, asyncio.Future[bool]] = {}
        self._last_sent = 0.0
        self._last_received = 0.0
        self._client_pinged = False

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
        return self.context.connection_id if self.context else None

    @property
    def user(self) -> Any:
        return self.context.user if self.context else None

    async def add_to_group_with_metadata(self, group: str, metadata: dict[str, Any]) -> None:
        """Join ``group`` and keep ``metadata`` with the membership (``context.groups``)."""
        await self.groups.add(group, metadata)

    async def abort(self, error: str | None = None, *, allow_reconnect: bool = False) -> None:
        """Close this connection, telling the client ``error`` in a Close message."""
        await self._close_with(error, allow_reconnect=allow_reconnect)

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
        if self.context is None or self._closed:
            return False
        body = build_body(
            payload, correlation_id=correlation_id, requires_ack=True, omit_nulls=conduit_settings.OMIT_NULLS
        )
        outbound = encode_outbound(method, body)
        connection_id = self.context.connection_id
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._confirmations[outbound.message_id] = future
        pending = get_pending()
        # Registered first, like every acknowledged send; due far enough out that no retry
        # pass sends it again while this waits (it has no stored copy to resend anyway).
        entry = {connection_id: self.context.user_id}
        await pending.register(outbound.message_id, entry, time.time() + timeout + _lease_margin())
        try:
            await self._write_outbound(outbound)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        finally:
            self._confirmations.pop(outbound.message_id, None)
            await pending.ack(connection_id, outbound.message_id)

    @hub_method
    async def acknowledge_message(self, message_id: str) -> bool:
        """The client processed ``messageId``: clear this connection's pending entry.

        Idempotent; an unknown id is answered (False), not an error.
        """
        if not isinstance(message_id, str) or not message_id:
            raise InvalidArguments("messageId must be a non-empty string.")
        assert self.context is not None
        cleared = await receipts.acknowledge(self.get_hub_name(), self.context.connection_id, message_id)
        self._confirm(message_id, True)
        return cleared

    @hub_method
    async def acknowledge_messages(self, message_ids: list[str]) -> int:
        """``AcknowledgeMessage`` for several messages in one call, for a client that received a
        burst (one frame instead of one per message). Answers how many were pending."""
        return sum(await self._acknowledge_all(message_ids))

    async def _acknowledge_all(self, message_ids: object) -> list[bool]:
        if (
            not isinstance(message_ids, list)
            or len(message_ids) > MAX_ACK_BATCH
            or not all(isinstance(m, str) and m for m in message_ids)
        ):
            raise InvalidArguments(f"messageIds must be a list of at most {MAX_ACK_BATCH} non-empty strings.")
        assert self.context is not None
        hub, connection_id = self.get_hub_name(), self.context.connection_id
        cleared = await receipts.acknowledge_many(hub, connection_id, message_ids)
        for message_id in message_ids:
            self._confirm(message_id, True)
        return cleared

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
        if self._confirm(message_id, False):
            return "unknown"  # a send_with_confirmation: its caller gets False, nothing is retried
        return await receipts.nack(
            self.get_hub_name(), self.context.connection_id, message_id, (reason or "")[:500]
        )

    def _confirm(self, message_id: str, acked_in_time: bool) -> bool:
        future = self._confirmations.get(message_id)
        if future is None or future.done():
            return False
        future.set_result(acked_in_time)
        return True

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
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except BaseException as exc:
            if not self._torn_down:
                self._closed = True
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

    # ----------------------------------------------------------------------------- connect

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        try:
            self.context = await self._open()
            await self.authorize(self.context)
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
        self._last_received = self._last_sent = self.clock()
        self._spawn(self._handshake_deadline())

    async def _refuse(self) -> None:
        """Close before accepting: the client sees HTTP 403."""
        self.context = None
        self._closed = True
        await self.base_send({"type": "websocket.close"})

    async def _open(self) -> ConnectionContext:
        headers: list[tuple[bytes, bytes]] = list(self.scope.get("headers") or [])
        header = {k.lower(): v.decode("latin1") for k, v in headers}
        if not origin_allowed(header.get(b"origin"), header.get(b"host")):
            raise HubDenied("Origin not allowed.")

        query_string: bytes = self.scope.get("query_string") or b""
        token = token_from_headers_and_query(headers, query_string)
        if token is not None:
            try:
                user = await database_sync_to_async(user_from_token)(token)
            except InvalidToken as exc:
                raise HubDenied("Invalid or expired access token.") from exc
        else:
            user = self.scope.get("user") or AnonymousUser()
        authenticated = bool(getattr(user, "is_authenticated", False))
        if self.require_authentication and not authenticated:
            raise HubDenied("Authentication required.")
        user_pk = str(user.pk) if authenticated else None

        ids = parse_qs(query_string.decode("latin1")).get("id")
        if ids:
            negotiated = await connections.aclaim(ids[0])
            if negotiated is None or negotiated.hub != self.get_hub_name():
                raise HubDenied("No connection with that ID.")
            if negotiated.user_pk != user_pk:
                raise HubDenied("The connection was negotiated for another user.")
            connection_id = negotiated.connection_id
        else:  # skipNegotiation: the client connects straight to the hub URL.
            connection_id = connections.new_connection_id()

        client = self.scope.get("client")
        now = datetime.now(UTC)
        self.clients = HubClients(
            hub_name=self.get_hub_name(),
            namespace=self.get_group_namespace(),
            layer_alias=self.channel_layer_alias,
            caller_id=connection_id,
            caller_writer=self._write_outbound,
        )
        return ConnectionContext(
            connection_id=connection_id,
            hub=self.get_hub_name(),
            user=user,
            remote_address=client[0] if client else None,
            user_agent=header.get(b"x-signalr-user-agent") or header.get(b"user-agent"),
            connected_at=now,
            last_activity=now.timestamp(),
        )

    async def _adopt_pending(self, user_id: str) -> None:
        """Take over and receive what this user's vanished connections did not acknowledge."""
        assert self.context is not None
        try:
            await adopt_and_redeliver(
                namespace=self.get_group_namespace(),
                user_id=user_id,
                connection_id=self.context.connection_id,
            )
        except Exception:
            logger.exception(
                "%s: could not redeliver pending messages to a new connection.", self.get_hub_name()
            )
            hub_metrics().errors.labels(where="adopt_pending").inc()

    async def _handshake_deadline(self) -> None:
        await asyncio.sleep(conduit_settings.HANDSHAKE_TIMEOUT)
        if self.protocol is None and not self._closed:
            await self._fail_handshake("Handshake was canceled.")

    async def _fail_handshake(self, error: str) -> None:
        logger.info("%s: handshake failed: %s", self.get_hub_name(), error)
        hub_metrics().protocol_errors.labels(hub=self.get_hub_name(), kind="handshake").inc()
        await self._send_frame(handshake_response(error).decode("utf-8"))
        self._close_error = error
        await self._close_socket()

    # ----------------------------------------------------------------------------- receive

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
        if data is None or self._closed or self.context is None:
            return
        self._last_received = self.clock()
        try:
            if self.protocol is None:
                await self._receive_handshake(data)
            else:
                await self._receive_messages(data)
        except Exception:
            logger.exception("%s: error while handling a client frame.", self.get_hub_name())
            hub_metrics().errors.labels(where="receive").inc()
            await self._close_with("Connection closed with an error.", allow_reconnect=True)

    async def _receive_handshake(self, data: str | bytes) -> None:
        try:
            parsed = self._handshake.feed(data)
            if parsed is None:
                return
            request, rest = parsed
            protocol = get_protocol(request.protocol)
        except HandshakeError as exc:
            await self._fail_handshake(str(exc))
            return
        if not protocol.is_version_supported(request.version):
            await self._fail_handshake(
                f"The server does not support version {request.version} of the '{protocol.name}' protocol."
            )
            return
        assert self.context is not None
        self.protocol = protocol
        self.context.protocol = protocol.name
        self._decoder = protocol.decoder(conduit_settings.MAX_MESSAGE_SIZE)
        reply = handshake_response()
        await self._send_frame(reply if protocol.transfer_format == "Binary" else reply.decode("utf-8"))

        await self._join_system_groups()
        try:
            await self.on_connection_established(self.context)
        except Exception:
            logger.exception("%s: on_connection_established failed.", self.get_hub_name())
            hub_metrics().errors.labels(where="on_connection_established").inc()
            await self._close_with("Connection closed with an error.", allow_reconnect=False)
            return
        self._established = True
        self._invocations = asyncio.Queue(maxsize=conduit_settings.MAX_PENDING_INVOCATIONS)
        self._spawn(self._invocation_worker())
        self._spawn(self._keep_alive())
        ensure_embedded_runner()
        if self.context.user_id is not None:
            self._spawn(self._adopt_pending(self.context.user_id))
        if rest:
            await self._receive_messages(rest)

    async def _receive_messages(self, data: str | bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except MessageTooLargeError as exc:
            hub_metrics().protocol_errors.labels(hub=self.get_hub_name(), kind="too_large").inc()
            await self._close_with(str(exc), allow_reconnect=False)
            return
        except ProtocolError as exc:
            hub_metrics().protocol_errors.labels(hub=self.get_hub_name(), kind="invalid").inc()
            logger.info("%s: closing %s: invalid message: %s", self.get_hub_name(), self.connection_id, exc)
            await self._close_with(f"Connection closed with an error. Invalid message: {exc}")
            return
        for msg in messages:
            await self._handle_message(msg)
            if self._closed:
                return

    async def _handle_message(self, msg: HubMessage) -> None:
        if not isinstance(msg, PingMessage):
            assert self.context is not None
            self.context.messages_in += 1
            self.context.last_activity = time.time()
        if isinstance(msg, StreamInvocationMessage):
            await self._start_stream(msg)
        elif isinstance(msg, InvocationMessage):
            assert self._invocations is not None
            if msg.target.lower() in _INLINE_METHODS:
                await self._invoke(msg)
                return
            try:
                self._invocations.put_nowait(msg)
            except asyncio.QueueFull:
                hub_metrics().rate_limited.labels(hub=self.get_hub_name(), outcome="refused").inc()
                await self._complete(msg, error=client_errors.too_many_pending(msg.target))
        elif isinstance(msg, CancelInvocationMessage):
            task = self._streams.get(msg.invocation_id)
            if task is not None:
                self._client_cancelled.add(msg.invocation_id)
                task.cancel()
        elif isinstance(msg, PingMessage):
            self._client_pinged = True
        elif isinstance(msg, CloseMessage):
            await self._close_socket()
        # Completions (client results), stream items (uploads), Ack and Sequence (stateful
        # reconnect) are features this server does not offer; they are ignored as ASP.NET
        # ignores what it does not expect.

    # ----------------------------------------------------------------------------- invocations

    async def _invocation_worker(self) -> None:
        assert self._invocations is not None
        while True:
            msg = await self._invocations.get()
            try:
                await self._within_rate_limit()
                await self._invoke(msg)
            except Exception:
                # Hub code's errors are answered in _invoke; this is what is left (e.g. an error
                # reply no protocol can encode, for an invocation id no UTF-8 can hold). Ending
                # the worker would leave an open socket that never answers again; this
                # invocation cannot be answered, so the connection is closed with an error.
                logger.exception("%s: could not handle an invocation; closing.", self.get_hub_name())
                hub_metrics().errors.labels(where="invocation").inc()
                await self._close_with("Connection closed with an error.", allow_reconnect=True)
                return

    async def _within_rate_limit(self) -> None:
        """Before each queued invocation runs: wait while the client is over ``RATE_LIMIT``
        (``hubs.rate_limit``). The invocations behind it wait in the queue meanwhile."""
        delayed = False
        while wait := await self._rate_limit_wait():
            if not delayed:
                delayed = True
                hub_metrics().rate_limited.labels(hub=self.get_hub_name(), outcome="delayed").inc()
            await asyncio.sleep(wait)

    async def _stream_allowed(self, msg: StreamInvocationMessage) -> bool:
        """A stream counts as one invocation; over the limit it is refused (it has no queue)."""
        wait = await self._rate_limit_wait()
        if not wait:
            return True
        hub_metrics().rate_limited.labels(hub=self.get_hub_name(), outcome="stream_refused").inc()
        await self._complete(msg, error=client_errors.rate_limited(msg.target, wait))
        return False

    async def _rate_limit_wait(self) -> float:
        """One hit against ``RATE_LIMIT`` for this client: 0 when it is allowed (or the limit is
        off, or its storage failed: logged and counted), else the seconds to wait first."""
        assert self.context is not None
        key = client_key(self.get_group_namespace(), self.context.user_id, self.context.connection_id)
        try:
            limiter = get_limiter()
            return 0.0 if limiter is None else await limiter.try_acquire(*key)
        except Exception:  # a bad setting or a failed storage: serve rather than stall every client
            logger.exception("%s: rate limit unavailable; invocation allowed.", self.get_hub_name())
            hub_metrics().errors.labels(where="rate_limit").inc()
            return 0.0

    def _bind(self, msg: InvocationMessage) -> tuple[MethodSpec | None, str | None]:
        """The method an invocation names, or the error the client gets instead."""
        target = msg.target
        spec = self._methods.get(target.lower())
        if spec is None:
            return None, client_errors.method_missing(target)
        if spec.streaming != isinstance(msg, StreamInvocationMessage):
            return None, client_errors.streaming_mismatch(target, method_streams=spec.streaming)
        if msg.stream_ids:
            return None, client_errors.uploads_unsupported(target)
        if not spec.accepts(len(msg.arguments)):
            return None, client_errors.wrong_argument_count(target, len(msg.arguments), spec.expected())
        return spec, None

    async def _invoke(self, msg: InvocationMessage) -> None:
        hub = self.get_hub_name()
        spec, error = self._bind(msg)
        if spec is None:
            hub_metrics().invocations.labels(hub=hub, method="unknown", outcome="rejected").inc()
            await self._complete(msg, error=error)
            return
        started = time.perf_counter()
        try:
            chain = get_chain()  # HUB_FILTERS composed once per process; None without filters
            if chain is not None:
                result = await chain(self._hub_invocation(msg, spec))
            elif spec.is_async:
                result = await getattr(self, spec.attribute)(*msg.arguments)
            else:
                result = await database_sync_to_async(getattr(self, spec.attribute))(*msg.arguments)
        except UnexpectedError as exc:  # a filter logged it under an error id: no second log line
            self._count_invocation(hub, spec.wire_name, "error", started)
            error = client_errors.invocation_failed(
                msg.target, detail=self._cause_detail(exc), error_id=exc.error_id
            )
            await self._complete(msg, error=error)
            return
        except HubError as exc:
            self._count_invocation(hub, spec.wire_name, "hub_error", started)
            await self._complete(
                msg, error=client_errors.invocation_failed(msg.target, hub_error=exc.message)
            )
            return
        except Exception as exc:
            logger.exception("%s: hub method %s raised.", hub, spec.wire_name)
            self._count_invocation(hub, spec.wire_name, "error", started)
            detail = self._detail(exc)
            await self._complete(msg, error=client_errors.invocation_failed(msg.target, detail=detail))
            return
        if msg.invocation_id:
            try:
                await self._write(CompletionMessage.with_result(msg.invocation_id, to_wire(result)))
            except Exception as exc:  # the result cannot be sent, e.g. a string no UTF-8 can hold
                logger.exception("%s: the result of %s cannot be sent.", hub, spec.wire_name)
                hub_metrics().errors.labels(where="invocation_result").inc()
                self._count_invocation(hub, spec.wire_name, "error", started)
                detail = self._detail(exc)
                await self._complete(msg, error=client_errors.invocation_failed(msg.target, detail=detail))
                return
        self._count_invocation(hub, spec.wire_name, "ok", started)

    def _hub_invocation(
        self, msg: InvocationMessage | StreamInvocationMessage, spec: MethodSpec
    ) -> HubInvocation:
        """What the filters see of an invocation (``hubs.filters``)."""
        assert self.context is not None
        return HubInvocation(
            self,
            self.get_hub_name(),
            self.context,
            spec.wire_name,
            msg.arguments,
            msg.invocation_id,
            spec,
            msg.headers,
            spec.streaming,
        )

    @staticmethod
    def _count_invocation(hub: str, method: str, outcome: str, started: float) -> None:
        """Count a finished invocation and observe its duration since ``started``
        (``time.perf_counter``). Cached label children: this runs for every ack."""
        metrics = hub_metrics()
        metrics.child(metrics.invocations, hub, method, outcome).inc()
        metrics.child(metrics.invocation_duration, hub, method, outcome).observe(
            time.perf_counter() - started
        )

    def _cause_detail(self, exc: UnexpectedError) -> str | None:
        """``_detail`` of the exception an ``UnexpectedError`` was raised from."""
        cause = exc.__cause__
        return self._detail(cause) if isinstance(cause, Exception) else None

    @staticmethod
    def _detail(exc: Exception) -> str | None:
        """Exception type and text for clients, only with ``ENABLE_DETAILED_ERRORS``."""
        if conduit_settings.ENABLE_DETAILED_ERRORS:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _complete(self, msg: InvocationMessage, *, error: str | None) -> None:
        if msg.invocation_id and not self._closed:
            await self._write(CompletionMessage.with_error(msg.invocation_id, error or "Invocation failed."))

    async def _start_stream(self, msg: StreamInvocationMessage) -> None:
        if msg.invocation_id in self._streams:
            await self._complete(msg, error=client_errors.duplicate_invocation_id(msg.invocation_id))
            return
        spec, error = self._bind(msg)
        if spec is None:
            hub_metrics().invocations.labels(
                hub=self.get_hub_name(), method="unknown", outcome="rejected"
            ).inc()
            await self._complete(msg, error=error)
            return
        if not await self._stream_allowed(msg):
            return
        task = self._spawn(self._run_stream(msg, spec))
        self._streams[msg.invocation_id] = task

    async def _run_stream(self, msg: StreamInvocationMessage, spec: MethodSpec) -> None:
        invocation_id, hub = msg.invocation_id, self.get_hub_name()
        outcome = "ok"
        started = time.perf_counter()
        try:
            chain = get_chain()  # filters wrap the call that makes the stream (and may wrap it)
            if chain is None:
                stream = getattr(self, spec.attribute)(*msg.arguments)
            else:
                stream = await chain(self._hub_invocation(msg, spec))
            try:
                async for item in stream:
                    await self._write(StreamItemMessage(invocation_id, to_wire(item)))
            finally:
                aclose = getattr(stream, "aclose", None)  # a filter's wrapper may be a plain iterator
                if aclose is not None:
                    await aclose()
            await self._write(CompletionMessage.empty(invocation_id))
        except asyncio.CancelledError:
            if invocation_id not in self._client_cancelled:
                raise  # the connection is going away: nothing more to send
            # The client cancelled: not an error, but the invocation still gets its Completion.
            await self._write(CompletionMessage.empty(invocation_id))
        except UnexpectedError as exc:  # a filter logged it under an error id: no second log line
            outcome = "error"
            error = client_errors.stream_failed(detail=self._cause_detail(exc), error_id=exc.error_id)
            await self._write(CompletionMessage.with_error(invocation_id, error))
        except HubError as exc:
            outcome = "hub_error"
            error = client_errors.stream_failed(hub_error=exc.message)
            await self._write(CompletionMessage.with_error(invocation_id, error))
        except Exception as exc:
            outcome = "error"
            logger.exception("%s: streaming hub method %s raised.", hub, spec.wire_name)
            error = client_errors.stream_failed(detail=self._detail(exc))
            await self._write(CompletionMessage.with_error(invocation_id, error))
        finally:
            self._streams.pop(invocation_id, None)
            self._client_cancelled.discard(invocation_id)
            self._count_invocation(hub, spec.wire_name, outcome, started)

    # ----------------------------------------------------------------------------- keep-alive

    async def _keep_alive(self) -> None:
        interval = conduit_settings.KEEP_ALIVE_INTERVAL
        timeout = conduit_settings.CLIENT_TIMEOUT
        while not self._closed:
            due = self._last_sent + interval
            if self._client_pinged:
                due = min(due, self._last_received + timeout)
            await asyncio.sleep(max(0.0, due - self.clock()))
            now = self.clock()
            if self._client_pinged and now - self._last_received >= timeout:
                logger.info("%s: client %s timed out.", self.get_hub_name(), self.connection_id)
                await self._close_with(
                    "Server timeout elapsed without receiving a message from the client.",
                    allow_reconnect=True,
                )
                return
            if now - self._last_sent >= interval:
                await self._write(PingMessage())

    # ----------------------------------------------------------------------------- layer events

    async def conduit_deliver(self, message: dict[str, Any]) -> None:
        """A server event from the channel layer: write this protocol's pre-encoded record.

        Delivered from the moment the connection joined its groups (right after the handshake
        answer), also while ``on_connection_established`` runs, as ASP.NET does.
        """
        if self._closed or self.protocol is None:
            return
        if self._held is not None:  # a resume is replaying history: live events wait behind it
            self._held.append(message)
            return
        await self._deliver(message)

    async def _deliver(self, message: dict[str, Any]) -> None:
        exclude = message.get("exclude")
        if exclude and self.connection_id in exclude:
            return
        if not self._first_time(message.get("id")) and not message.get("redeliver"):
            return
        assert self.protocol is not None
        await self._send_frame(message["records"][self.protocol.name])
        self._count_out(1)
        record_delivery(self.get_hub_name(), message)

    def _first_time(self, message_id: str | None) -> bool:
        """Record ``message_id`` as sent; False if it already was (one event sent to several of a
        connection's groups, or replayed by a resume and also delivered live)."""
        if message_id is None:
            return True
        if message_id in self._recent_set:
            return False
        if len(self._recent_ids) == self._recent_ids.maxlen:
            self._recent_set.discard(self._recent_ids[0])
        self._recent_ids.append(message_id)
        self._recent_set.add(message_id)
        return True

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
        self._held = []
        try:
            await self.groups.add(group, metadata)  # first: nothing sent from now on is missed
            replay = await get_history().read_after(self.clients.stream_of(group), epoch, last_seq)
            for entry in replay.entries or ():
                if self._first_time(entry.message_id):
                    assert replay.position is not None
                    body = {**entry.body, "seq": entry.seq, "epoch": replay.position.epoch}
                    await self._write_outbound(encode_outbound(entry.method, body))
        finally:
            while self._held:
                held, self._held = self._held, []
                for message in held:
                    await self._deliver(message)
            self._held = None
        return replay

    async def conduit_group_add(self, message: dict[str, Any]) -> None:
        """Join a group on request of code outside this connection (``HubContext.groups``)."""
        if self.protocol is not None and not self._closed:
            await self._join_group(message["group"], dict(message.get("metadata") or {}))

    async def conduit_group_discard(self, message: dict[str, Any]) -> None:
        """Leave a group on request of code outside this connection."""
        if self.protocol is not None and not self._closed:
            await self._leave_group(message["group"])

    async def conduit_close(self, message: dict[str, Any]) -> None:
        """Close this connection on request of code outside it (admin, stale cleanup)."""
        await self._close_with(message.get("error"), allow_reconnect=bool(message.get("allow_reconnect")))

    # ----------------------------------------------------------------------------- groups

    async def _join_system_groups(self) -> None:
        assert self.context is not None
        channels = [
            connection_channel(self.context.connection_id),
            all_channel(self.get_hub_name()),
        ]
        if self.context.user_id is not None:
            channels.append(user_channel(self.get_group_namespace(), self.context.user_id))
        router = local_router(self.channel_layer_alias)
        for channel in channels:
            await router.add(channel, self)
            self._system_groups.append(channel)
        await self._record_members("add", channels, user_id=self.context.user_id)
        await self._presence("register")

    async def _join_group(self, group: str, metadata: dict[str, Any]) -> None:
        assert self.context is not None
        channel = group_channel(self.get_group_namespace(), group)
        await local_router(self.channel_layer_alias).add(channel, self)
        self.context.groups[group] = metadata
        await self._record_members("add", [channel])
        await self._presence("refresh")

    async def _leave_group(self, group: str) -> None:
        assert self.context is not None
        channel = group_channel(self.get_group_namespace(), group)
        await local_router(self.channel_layer_alias).discard(channel, self)
        self.context.groups.pop(group, None)
        await self._record_members("remove", [channel])
        await self._presence("refresh")

    async def _record_members(
        self, action: str, channels: list[str], *, user_id: str | None = None, forget_user: bool = False
    ) -> None:
        """Keep the membership registry (``hubs.delivery.members``) in step with the layer.

        A failure is logged and counted and the connection carries on: the layer membership,
        which delivers, is already in place.
        """
        assert self.context is not None
        members = get_members()
        try:
            if action == "add":
                await members.add(self.context.connection_id, channels, user_id)
            else:
                await members.remove(self.context.connection_id, channels, forget_user)
        except Exception:
            logger.exception("%s: could not record memberships (%s).", self.get_hub_name(), action)
            hub_metrics().errors.labels(where="members").inc()

    async def _presence(self, action: str) -> None:
        """Take, refresh or end this connection's presence lease and monitor record
        (``hubs.presence``); a failure is logged and counted, the connection carries on (the
        lease matters for redelivery, the record for the monitor)."""
        assert self.context is not None
        connections = local_connections()
        try:
            if action == "register":
                await connections.register(self.context.connection_id, self)
            elif action == "refresh":
                if self._system_groups and not self._closed:
                    await connections.refresh(self)
            else:
                await connections.unregister(self.context.connection_id, self.get_hub_name())
        except Exception:
            logger.exception("%s: could not %s the connection's presence.", self.get_hub_name(), action)
            hub_metrics().errors.labels(where="presence").inc()

    # ----------------------------------------------------------------------------- sending

    async def _send_frame(self, data: str | bytes) -> None:
        if self._closed:
            return
        self._last_sent = self.clock()
        if isinstance(data, str):
            await self.base_send({"type": "websocket.send", "text": data})
        else:
            await self.base_send({"type": "websocket.send", "bytes": data})

    async def _write(self, *messages: HubMessage) -> None:
        """Encode and send whole records in one frame (a record is never split)."""
        if self.protocol is None or self._closed:
            return
        data = self.protocol.encode_many(messages)
        await self._send_frame(data.decode("utf-8") if self.protocol.transfer_format == "Text" else data)
        self._count_out(sum(1 for m in messages if not isinstance(m, PingMessage)))

    async def _write_outbound(self, outbound: Outbound) -> None:
        if self.protocol is not None:
            await self._send_frame(outbound.records[self.protocol.name])
            self._count_out(1)

    def _count_out(self, count: int) -> None:
        """Count hub messages sent (pings excluded) for the connection monitor."""
        if count and self.context is not None:
            self.context.messages_out += count
            self.context.last_activity = time.time()

    def monitor_record(self) -> ConnectionRecord:
        """This connection's record for observers (``hubs.signals``, ``hubs.records``); made
        when it opens, joins or leaves a group, and every ``PRESENCE_TTL / 3`` seconds."""
        assert self.context is not None
        context = self.context
        user = context.user
        return ConnectionRecord(
            connection_id=context.connection_id,
            hub=context.hub,
            server_id=process_identity().server_id,
            user_id=context.user_id,
            username=user.get_username() if context.user_id is not None else None,
            remote_address=context.remote_address,
            protocol=context.protocol,
            user_agent=context.user_agent,
            connected_at=context.connected_at.timestamp(),
            last_activity=context.last_activity,
            messages_in=context.messages_in,
            messages_out=context.messages_out,
            ping_latency_ms=context.ping_latency_ms,
            groups=dict(context.groups),
            channels=self._system_groups
            + [group_channel(self.get_group_namespace(), g) for g in context.groups],
            layer_alias=self.channel_layer_alias,
        )

    # ----------------------------------------------------------------------------- closing

    async def _close_with(self, error: str | None, *, allow_reconnect: bool = False) -> None:
        if self._closed:
            return
        self._close_error = error
        if self.protocol is not None:
            await self._write(CloseMessage(error=error, allow_reconnect=allow_reconnect))
        await self._close_socket()

    async def _close_socket(self) -> None:
        if self._closed:
            return
        await self.base_send({"type": "websocket.close", "code": 1000})
        self._closed = True

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        code = message.get("code")
        exc: BaseException | None = None
        if self._close_error:
            exc = ConnectionLost(self._close_error)
        elif not self._closed and code not in (1000, 1001, None):
            exc = ConnectionLost(f"WebSocket closed with status code {code}.")
        self._closed = True
        await self._teardown(exc)
        raise StopConsumer()

    async def _teardown(self, exc: BaseException | None) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        if self.context is not None and self._system_groups:
            local_connections().forget(self.context.connection_id)  # first: no more lease renewals
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=_TEARDOWN_WAIT)
            if stuck:
                logger.warning(
                    "%s: %d task(s) did not stop within %s s.",
                    self.get_hub_name(),
                    len(stuck),
                    _TEARDOWN_WAIT,
                )
        if self.context is None:
            return
        channels = self._system_groups + [
            group_channel(self.get_group_namespace(), g) for g in self.context.groups
        ]
        router = local_router(self.channel_layer_alias)
        for channel in channels:
            try:
                await router.discard(channel, self)
            except Exception:
                logger.exception("%s: could not leave %s.", self.get_hub_name(), channel)
                hub_metrics().errors.labels(where="group_discard").inc()
        await self._record_members("remove", channels, forget_user=True)
        if self._system_groups:
            await self._presence("unregister")
        for future in self._confirmations.values():
            if not future.done():
                future.set_result(False)
        if self.protocol is not None:
            try:
                await self.on_connection_lost(self.context, exc)
            except Exception:
                logger.exception("%s: on_connection_lost failed.", self.get_hub_name())
                hub_metrics().errors.labels(where="on_connection_lost").inc()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            hub_metrics().errors.labels(where="background_task").inc()
            logger.error("%s: background task failed.", self.get_hub_name(), exc_info=task.exception())


class SecureHub(Hub):
    """A hub that only authenticated users reach: refused at negotiate (401) and WebSocket (403).

    Users authenticate with the Django session, or a token (``Authorization: Bearer`` header or
    ``access_token`` query parameter) that a ``TOKEN_VALIDATORS`` entry accepts.
    """

    require_authentication = True


def _lease_margin() -> float:
    """Seconds past a confirmation's timeout before a retry pass could see its entry."""
    return max(60.0, float(conduit_settings.ACK_TIMEOUT))
