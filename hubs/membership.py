"""``Membership``: the groups of one connection, and what the rest of the system knows of them.

Its system groups (its own channel, the hub's, its user's) and the hub groups it joined, with
their metadata; kept in step in three places: the process's router (``hubs.fanout``, which
delivers), the membership registry (``hubs.delivery.members``, which acknowledged sends resolve
their recipients from) and the presence of the connection (``hubs.presence``: its lease, and its
record for observers, ``connection_record``). A failure of the registry or of presence is logged
and counted, and the connection carries on: the router's membership, which delivers, is in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .context import ConnectionContext
from .delivery.members import get_members
from .metrics import hub_metrics
from .naming import all_channel, connection_channel, group_channel, user_channel, validate_group_name
from .records import ConnectionRecord
from .runtime import local_connections, local_router
from .session import ProtocolSession
from .tally import process_identity

logger = logging.getLogger(__name__)


class Membership:
    """The groups of the connection ``hub`` serves (a ``Hub``: the router hands it messages)."""

    __slots__ = (
        "_context",
        "_groups_version",
        "_hub",
        "_hub_name",
        "_layer_alias",
        "_namespace",
        "_session",
        "_system",
        "hub_class",
    )

    def __init__(self, hub: Any, context: ConnectionContext, session: ProtocolSession) -> None:
        self._hub = hub
        self._context = context
        self._session = session
        self.hub_class: type = type(hub)
        self._hub_name: str = hub.get_hub_name()
        self._namespace: str = hub.get_group_namespace()
        self._layer_alias: str = hub.channel_layer_alias
        self._system: list[str] = []
        #: Bumped by every join and leave (``record_version``).
        self._groups_version = 0

    @property
    def hub_name(self) -> str:
        """The name of the hub serving the connection."""
        return self._hub_name

    @property
    def registered(self) -> bool:
        """Whether the connection joined its system groups (and so holds a presence lease)."""
        return bool(self._system)

    def channels(self) -> list[str]:
        """Every channel-layer group the connection is in."""
        return self._system + [group_channel(self._namespace, g) for g in self._context.groups]

    async def join_system_groups(self) -> None:
        """Right after the handshake answer: from now on the connection receives its events."""
        context = self._context
        channels = [connection_channel(context.connection_id), all_channel(self._hub_name)]
        if context.user_id is not None:
            channels.append(user_channel(self._namespace, context.user_id))
        router = local_router(self._layer_alias)
        for channel in channels:
            await router.add(channel, self._hub)
            self._system.append(channel)
        await self._record("add", channels, user_id=context.user_id)
        await self._presence("register")

    async def join(self, group: str, metadata: dict[str, Any]) -> None:
        """Join hub group ``group`` (a valid name) with ``metadata``."""
        channel = group_channel(self._namespace, group)
        await local_router(self._layer_alias).add(channel, self._hub)
        self._context.groups[group] = metadata
        self._groups_version += 1
        await self._record("add", [channel])
        await self._presence("refresh")

    async def leave(self, group: str) -> None:
        """Leave hub group ``group`` (no error if not a member)."""
        channel = group_channel(self._namespace, group)
        await local_router(self._layer_alias).discard(channel, self._hub)
        self._context.groups.pop(group, None)
        self._groups_version += 1
        await self._record("remove", [channel])
        await self._presence("refresh")

    def stop_renewing(self) -> None:
        """The first thing a closing connection does (synchronous: a teardown cut short can
        never leave a lease renewed forever)."""
        if self._system:
            local_connections().forget(self._context.connection_id)

    async def leave_all(self) -> None:
        """When the connection closed: every group, its registry entries and its presence."""
        router = local_router(self._layer_alias)
        channels = self.channels()
        for channel in channels:
            try:
                await router.discard(channel, self._hub)
            except Exception:
                logger.exception("%s: could not leave %s.", self._hub_name, channel)
                hub_metrics().errors.labels(where="group_discard").inc()
        if self._system:  # registry, lease and observers in the loop's departure batch
            await local_connections().depart(self._context.connection_id, self._hub_name, channels)
        else:
            await self._record("remove", channels, forget_user=True)

    def monitor_record(self) -> ConnectionRecord:
        """The connection's record for observers (``hubs.signals``, ``hubs.records``); made when
        it opens, joins or leaves a group, and every ``PRESENCE_TTL / 3`` seconds."""
        context = self._context
        return ConnectionRecord(
            connection_id=context.connection_id,
            hub=context.hub,
            server_id=process_identity().server_id,
            user_id=context.user_id,
            username=context.user.get_username() if context.user_id is not None else None,
            remote_address=context.remote_address,
            protocol=context.protocol,
            user_agent=context.user_agent,
            connected_at=context.connected_at.timestamp(),
            last_activity=context.last_activity,
            messages_in=context.messages_in,
            messages_out=context.messages_out,
            ping_latency_ms=context.ping_latency_ms,
            groups=dict(context.groups),
            channels=self.channels(),
            layer_alias=self._layer_alias,
        )

    def record_version(self) -> tuple[int, int, float | None, int]:
        """What changes whenever ``monitor_record`` would, times aside: the message counts (which
        move ``last_activity``), the ping latency and the groups. The presence round makes a new
        record only when it changed (``hubs.presence``)."""
        context = self._context
        return (context.messages_in, context.messages_out, context.ping_latency_ms, self._groups_version)

    async def _record(
        self, action: str, channels: list[str], *, user_id: str | None = None, forget_user: bool = False
    ) -> None:
        """Keep the membership registry in step with the router."""
        members = get_members()
        try:
            if action == "add":
                await members.add(self._context.connection_id, channels, user_id)
            else:
                await members.remove(self._context.connection_id, channels, forget_user)
        except Exception:
            logger.exception("%s: could not record memberships (%s).", self._hub_name, action)
            hub_metrics().errors.labels(where="members").inc()

    async def _presence(self, action: str) -> None:
        """Take or refresh the connection's presence lease and tell observers (it ends with
        ``leave_all``)."""
        connections = local_connections()
        try:
            if action == "register":
                await connections.register(self._context.connection_id, self)
            elif self._system and not self._session.closed:  # refresh
                await connections.refresh(self._context.connection_id, self)
        except Exception:
            logger.exception("%s: could not %s the connection's presence.", self._hub_name, action)
            hub_metrics().errors.labels(where="presence").inc()


class HubGroups:
    """Group membership of the current connection, as hub code uses it (``self.groups``)."""

    __slots__ = ("_membership",)

    def __init__(self, membership: Callable[[], Membership | None]) -> None:
        self._membership = membership

    async def add(self, group: str, metadata: dict[str, Any] | None = None) -> None:
        """Join hub group ``group``; ``metadata`` is kept with the membership (``context.groups``)."""
        await self._open().join(validate_group_name(group), dict(metadata or {}))

    async def discard(self, group: str) -> None:
        """Leave hub group ``group`` (no error if not a member)."""
        await self._open().leave(validate_group_name(group))

    def _open(self) -> Membership:
        membership = self._membership()
        if membership is None:
            raise RuntimeError("Groups are available once the connection is open (from authorize on).")
        return membership
