"""The send facade: reach hub clients from anywhere (views, signals, commands, Celery tasks).

    from hubs.send import get_hub_context
    tasks = get_hub_context("conduit_rt.demo.hubs.TaskHub")
    tasks.clients.group("task-42").send("TaskProgress", {"task_id": "42", "progress_percentage": 50})
    await tasks.clients.user(user.pk).asend("Notice", {"text": "hello"})
    tasks.groups.add(connection_id, "task-42")

``send`` is synchronous, ``asend`` its async core. Across processes this needs the Redis channel
layer (``REDIS_URL``); with the in-memory layer only the server process itself can send.
Payloads are single objects: dicts or dataclasses, keys camelCased, Nones left out, and the
envelope (``messageId``, ``timestamp``, ``correlationId``, ``retryCount``) added.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils.module_loading import import_string

from .clients import HubClients
from .fanout import group_send
from .naming import connection_channel, validate_group_name


class HubGroupManager:
    """Add or remove any connection to/from a hub group, by connection id."""

    def __init__(self, layer_alias: str) -> None:
        self._layer_alias = layer_alias

    async def aadd(self, connection_id: str, group: str, metadata: dict[str, Any] | None = None) -> None:
        """Ask the connection's consumer, wherever it runs, to join ``group``."""
        await self._ask(
            connection_id,
            {
                "type": "conduit.group.add",
                "group": validate_group_name(group),
                "metadata": metadata or {},
            },
        )

    async def adiscard(self, connection_id: str, group: str) -> None:
        """Ask the connection's consumer to leave ``group``."""
        await self._ask(connection_id, {"type": "conduit.group.discard", "group": validate_group_name(group)})

    def add(self, connection_id: str, group: str, metadata: dict[str, Any] | None = None) -> None:
        async_to_sync(self.aadd)(connection_id, group, metadata)

    def discard(self, connection_id: str, group: str) -> None:
        async_to_sync(self.adiscard)(connection_id, group)

    async def _ask(self, connection_id: str, message: dict[str, Any]) -> None:
        await send_to_connection(self._layer_alias, connection_id, message)


async def send_to_connection(layer_alias: str, connection_id: str, message: dict[str, Any]) -> None:
    """Hand a channel-layer ``message`` to the consumer serving ``connection_id``, in whichever
    process it runs (through the connection's own group)."""
    layer = get_channel_layer(layer_alias)
    if layer is None:
        raise RuntimeError(f"No channel layer is configured under alias {layer_alias!r}.")
    await group_send(layer, connection_channel(connection_id), message)


async def aclose_connection(
    connection_id: str,
    error: str | None = None,
    *,
    allow_reconnect: bool = False,
    layer_alias: str = "default",
) -> None:
    """Close a connection wherever it is served: its server writes a SignalR Close message with
    ``error`` and closes the socket; its teardown removes its state as for any close."""
    await send_to_connection(
        layer_alias,
        connection_id,
        {"type": "conduit.close", "error": error, "allow_reconnect": allow_reconnect},
    )


class HubContext:
    """What code outside a hub connection can do with a hub: ``clients`` and ``groups``."""

    def __init__(self, hub_class: Any) -> None:
        self.hub_class = hub_class
        self.clients = HubClients(
            hub_name=hub_class.get_hub_name(),
            namespace=hub_class.get_group_namespace(),
            layer_alias=hub_class.channel_layer_alias,
        )
        self.groups = HubGroupManager(hub_class.channel_layer_alias)


@lru_cache(maxsize=64)
def _context_for(hub: Any) -> HubContext:
    return HubContext(import_string(hub) if isinstance(hub, str) else hub)


def get_hub_context(hub: str | type) -> HubContext:
    """The ``HubContext`` of a hub class, given as the class or its dotted path."""
    return _context_for(hub)
