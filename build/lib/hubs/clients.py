"""``clients`` proxies: who a server event goes to (all, a group, a user, a connection, …).

The same proxies serve hub code (``self.clients.group("g").asend(...)``) and code outside the
server (``get_hub_context(TaskHub).clients.user(42).send(...)``). ``asend`` is the async core,
``send`` its sync wrapper for views, signals, management commands and Celery tasks.

A message to a group is a stream message: the group's history gives it the next ``seq`` (and the
stream's ``epoch``) before it is published, so clients can see gaps and resume.

A send is fire-and-forget or acknowledged (``ack=True``, or the event is in ``ACK_EVENTS``); see
``hubs.delivery.acked`` and ``docs/delivery.md``. Both go through the circuit breaker: a
fire-and-forget send raises ``DeliveryUnavailable`` when the layer is down, an acknowledged one is
persisted first and goes out when the layer is back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer

from .conf import conduit_settings
from .delivery import acked
from .delivery.breaker import get_breaker
from .delivery.history import Position, get_history
from .delivery_metrics import record_failure
from .fanout import group_send
from .loop_thread import to_sync
from .metrics import hub_metrics
from .naming import all_channel, connection_channel, group_channel, user_channel, validate_group_name
from .outbound import Outbound, encode_outbound
from .payloads import build_body

DirectWriter = Callable[[Outbound], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Target:
    """One Channels group to publish to; ``stream`` is set for hub groups (they get a seq)."""

    channel: str
    stream: bool = False


class ClientProxy:
    """A set of recipients; ``asend``/``send`` deliver one event to each of them once."""

    def __init__(
        self,
        layer_alias: str,
        targets: Iterable[Target],
        exclude: Iterable[str] = (),
        *,
        hub: tuple[str, str] = ("", ""),
        direct: DirectWriter | None = None,
    ) -> None:
        self._layer_alias = layer_alias
        self._targets = tuple(dict.fromkeys(targets))
        self._exclude = tuple(exclude)
        self._hub_name, self._namespace = hub
        self._direct = direct

    async def asend(
        self,
        method: str,
        payload: Any = None,
        *,
        correlation_id: str | None = None,
        position: Position | None = None,
        ack: bool | None = None,
    ) -> str:
        """Send ``method(payload)``; returns the message id. Raises for a payload that is not
        a single JSON-able object, or uses an envelope key, before anything is sent.

        ``ack``: True sends it acknowledged (persisted, retried until every recipient connection
        acks, else a dead letter), False fire-and-forget, None as ``ACK_EVENTS`` says.
        ``position`` stamps a stream position on a message that is not itself a stream message
        (a snapshot sent by a resume), so the client can continue counting from it.
        Raises ``DeliveryUnavailable`` when a fire-and-forget send cannot reach the layer.
        """
        if not isinstance(method, str) or not method:
            raise ValueError("A server event needs a non-empty method name.")
        acknowledged = position is None and acked.wants_ack(method, ack)
        body = build_body(
            payload,
            correlation_id=correlation_id,
            requires_ack=acknowledged,
            omit_nulls=conduit_settings.OMIT_NULLS,
        )
        if position is not None:
            body = {**body, "seq": position.seq, "epoch": position.epoch}
        plain = encode_outbound(method, body)  # also refuses what the wire cannot carry, before any send
        if acknowledged:
            return await self._send_acked(plain)
        if self._direct is not None:
            await self._direct(plain)
            return plain.message_id
        layer = get_channel_layer(self._layer_alias)
        if layer is None:
            raise RuntimeError(f"No channel layer is configured under alias {self._layer_alias!r}.")
        try:
            await get_breaker().call(lambda: self._publish(layer, plain))
        except Exception as exc:
            hub_metrics().unavailable.labels(hub=self._hub_name, method=method).inc()
            record_failure(self._hub_name, method, "unavailable")
            raise acked.DeliveryUnavailable(f"{method} could not be sent: {exc}") from exc
        return plain.message_id

    async def _publish(self, layer: Any, plain: Outbound) -> None:
        for target in self._targets:
            outbound = plain
            if target.stream:
                position = await get_history().append(
                    target.channel, plain.message_id, plain.method, plain.body
                )
                body = {**plain.body, "seq": position.seq, "epoch": position.epoch}
                outbound = encode_outbound(plain.method, body)
            await group_send(layer, target.channel, outbound.layer_message(self._exclude))

    async def _send_acked(self, plain: Outbound) -> str:
        return await acked.send(
            hub=self._hub_name,
            namespace=self._namespace,
            layer_alias=self._layer_alias,
            outbound=plain,
            targets=[(t.channel, t.stream) for t in self._targets],
            exclude=self._exclude,
        )

    def send(
        self, method: str, payload: Any = None, *, correlation_id: str | None = None, ack: bool | None = None
    ) -> str:
        """Synchronous ``asend``, for code that runs outside an event loop. An acknowledged
        message's row is written on the caller's own database connection (``docs/delivery.md``)."""
        return to_sync(self.asend)(method, payload, correlation_id=correlation_id, ack=ack)


class HubClients:
    """Recipient selectors of one hub, as in ASP.NET Core's ``Clients``."""

    def __init__(
        self,
        *,
        hub_name: str,
        namespace: str,
        layer_alias: str = "default",
        caller_id: str | None = None,
        caller_writer: DirectWriter | None = None,
    ) -> None:
        self._hub_name = hub_name
        self._namespace = namespace
        self._layer_alias = layer_alias
        self._caller_id = caller_id
        self._caller_writer = caller_writer

    def _proxy(self, channels: Iterable[str], exclude: Iterable[str] = ()) -> ClientProxy:
        return ClientProxy(self._layer_alias, (Target(c) for c in channels), exclude, hub=self._hub)

    def _groups(self, names: Iterable[str], exclude: Iterable[str] = ()) -> ClientProxy:
        targets = (Target(group_channel(self._namespace, validate_group_name(n)), stream=True) for n in names)
        return ClientProxy(self._layer_alias, targets, exclude, hub=self._hub)

    @property
    def _hub(self) -> tuple[str, str]:
        return (self._hub_name, self._namespace)

    def stream_of(self, group: str) -> str:
        """The stream (history) key of hub group ``group``."""
        return group_channel(self._namespace, validate_group_name(group))

    @property
    def all(self) -> ClientProxy:
        """Every connection of this hub."""
        return self._proxy([all_channel(self._hub_name)])

    def all_except(self, *connection_ids: str) -> ClientProxy:
        """Every connection of this hub but the given ones."""
        return self._proxy([all_channel(self._hub_name)], connection_ids)

    @property
    def caller(self) -> ClientProxy:
        """The connection whose invocation is running (hub code only)."""
        if self._caller_writer is None or self._caller_id is None:
            raise RuntimeError("clients.caller exists only inside a hub connection.")
        # Fire-and-forget goes straight to the socket; an acknowledged send takes the one
        # acknowledged path, through the caller's own channel group.
        targets = (Target(connection_channel(self._caller_id)),)
        return ClientProxy(self._layer_alias, targets, hub=self._hub, direct=self._caller_writer)

    @property
    def others(self) -> ClientProxy:
        """Every connection of this hub except the caller (hub code only)."""
        return self.all_except(*self._caller_ids())

    def group(self, name: str) -> ClientProxy:
        """The members of hub group ``name`` (a stream message: it gets the group's next seq)."""
        return self._groups([name])

    def groups(self, *names: str) -> ClientProxy:
        """The members of any of the groups; a member of several receives the event once, with
        the seq of the first group it arrived through."""
        return self._groups(names)

    def group_except(self, name: str, *connection_ids: str) -> ClientProxy:
        """The members of ``name`` but the given connections."""
        return self._groups([name], connection_ids)

    def others_in_group(self, name: str) -> ClientProxy:
        """The members of ``name`` except the caller (hub code only)."""
        return self.group_except(name, *self._caller_ids())

    def user(self, user_id: object) -> ClientProxy:
        """Every connection of one user (its primary key)."""
        return self._proxy([user_channel(self._namespace, user_id)])

    def users(self, *user_ids: object) -> ClientProxy:
        """Every connection of any of the users."""
        return self._proxy(user_channel(self._namespace, u) for u in user_ids)

    def connection(self, connection_id: str) -> ClientProxy:
        """One connection, by the id negotiate gave it."""
        return self._proxy([connection_channel(connection_id)])

    def connections(self, *connection_ids: str) -> ClientProxy:
        """Several connections by id."""
        return self._proxy(connection_channel(c) for c in connection_ids)

    def _caller_ids(self) -> tuple[str, ...]:
        if self._caller_id is None:
            raise RuntimeError("clients.others exists only inside a hub connection.")
        return (self._caller_id,)
