"""Per-process fan-out: one channel-layer channel per server process for all of its hub connections.

Plain Channels gives every consumer its own channel and puts every consumer in each of its groups,
so a group message is copied once per member connection into Redis, read and decoded once per
connection, and each copy costs a receive task. Here the process's ``LocalRouter`` is the only
member of a Channels group (it joins when its first local connection joins, and leaves with the
last one); a group message reaches each *process* once, and the router hands it to its local
members directly (``consumer.dispatch``), in the order the layer delivered it.

The router also keeps sockets open through a channel-layer outage: when receiving fails (Redis
went away) it retries with backoff and re-joins all its groups once the layer answers again
(a Redis that restarted empty has forgotten them). Its memberships are refreshed hourly, well
inside the layer's group expiry.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from channels.layers import get_channel_layer

from .metrics import hub_metrics

logger = logging.getLogger(__name__)

#: Prefix of each process's channel. channels-redis serialises receives per prefix, so anything
#: else that receives on this layer in the process (the health check's round trip) uses it too.
PROCESS_CHANNEL_PREFIX = "conduit.process."

#: The key naming the Channels group a layer message was sent to (the router's address book).
ROUTE_KEY = "conduit_group"
#: Seconds between two re-joins of every group (channels-redis expires memberships after a day).
REFRESH_INTERVAL = 3600.0
#: Backoff after a failed receive, doubling up to the maximum.
RETRY_DELAY, RETRY_DELAY_MAX = 0.1, 2.0


class Member(Protocol):
    """What the router needs from a connection: Channels' ``dispatch``."""

    async def dispatch(self, message: dict[str, Any]) -> None: ...


class LocalRouter:
    """The channel of one event loop (one server process) and the local members of its groups."""

    def __init__(self, layer_alias: str) -> None:
        self.layer_alias = layer_alias
        self.layer = get_channel_layer(layer_alias)
        if self.layer is None:
            raise RuntimeError(f"No channel layer is configured under alias {layer_alias!r}.")
        self.channel_name: str | None = None
        self.groups: dict[str, set[Member]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None

    async def add(self, group: str, member: Member) -> None:
        """Make ``member`` receive ``group``'s messages; returns once the layer knows."""
        async with self._lock(group):
            members = self.groups.get(group)
            if not members:
                channel = await self._channel()
                await self.layer.group_add(group, channel)
                members = self.groups[group] = set()
            members.add(member)
        self._forget_lock(group)

    async def discard(self, group: str, member: Member) -> None:
        """Stop giving ``group``'s messages to ``member`` (the process leaves with its last one)."""
        async with self._lock(group):
            members = self.groups.get(group)
            if not members or member not in members:
                return
            members.discard(member)
            if not members:
                del self.groups[group]
                if self.channel_name is not None:
                    await self.layer.group_discard(group, self.channel_name)
        self._forget_lock(group)
        if not self.groups:
            self._stop()

    def _lock(self, group: str) -> asyncio.Lock:
        # One lock per group: a join and a leave of the same group never reach Redis out of order.
        lock = self._locks.get(group)
        if lock is None:
            lock = self._locks[group] = asyncio.Lock()
        return lock

    def _forget_lock(self, group: str) -> None:
        lock = self._locks.get(group)
        if lock is not None and not lock.locked() and group not in self.groups:
            del self._locks[group]

    async def _channel(self) -> str:
        if self.channel_name is None or self._task is None or self._task.done():
            self.channel_name = await self.layer.new_channel(prefix=PROCESS_CHANNEL_PREFIX)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="conduit-fanout")
            if self.groups:  # a loop that ended under live members: they move to the new channel
                await self._rejoin(self.channel_name)
        return self.channel_name

    def _stop(self) -> None:
        # No local members left: the task ends, the next join starts a new channel.
        if self._task is not None:
            self._task.cancel()
        self._task = None
        self.channel_name = None

    async def _run(self) -> None:
        channel = self.channel_name
        assert channel is not None
        delay = RETRY_DELAY
        refresh = asyncio.get_running_loop().time() + REFRESH_INTERVAL
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "Fan-out: receiving from the channel layer failed; retrying in %.1f s.", delay
                )
                hub_metrics().errors.labels(where="fanout_receive").inc()
                await asyncio.sleep(delay)
                delay = min(RETRY_DELAY_MAX, delay * 2)
                await self._rejoin(channel)
                continue
            delay = RETRY_DELAY
            await self._deliver(message)
            if asyncio.get_running_loop().time() >= refresh:
                refresh = asyncio.get_running_loop().time() + REFRESH_INTERVAL
                await self._rejoin(channel)

    async def _deliver(self, message: dict[str, Any]) -> None:
        for member in list(self.groups.get(message.get(ROUTE_KEY, ""), ())):
            try:
                await member.dispatch(message)
            except Exception:
                logger.exception("Fan-out: a connection failed to handle %r.", message.get("type"))
                hub_metrics().errors.labels(where="fanout_dispatch").inc()

    async def _rejoin(self, channel: str) -> None:
        """Join every group again (after an outage, and periodically against group expiry)."""
        try:
            for group in list(self.groups):
                await self.layer.group_add(group, channel)
        except Exception as exc:  # noqa: BLE001 - still down: the next failed receive retries
            logger.warning("Fan-out: could not re-join the groups yet: %s", exc)
            hub_metrics().errors.labels(where="fanout_rejoin").inc()


async def group_send(layer: Any, group: str, message: dict[str, Any]) -> None:
    """Publish ``message`` to ``group`` through ``layer``, naming the group, so that each
    process's router can hand it to its local members. Every hub message goes out this way."""
    await layer.group_send(group, {**message, ROUTE_KEY: group})
