"""The baseline of the fan-out benchmark: a plain Channels ``AsyncWebsocketConsumer``.

Clients send JSON text frames: ``{"op": "join", "group": g}`` (answered ``{"op": "joined"}``) and
``{"op": "broadcast", "group": g, "count": m}`` (runs ``m`` ``group_send`` calls in the server,
answered ``{"op": "done", "sent": m, "seconds": s}``). Every group event is written with
``self.send(text_data=json.dumps(payload))``, as a Channels tutorial would.

``PlainConsumer`` keeps Channels' default ``dispatch``, which since Channels 4.2 runs
``close_old_connections`` in a worker thread before *every* message (see DESIGN.md, "Known
traps"). ``PlainNoDbConsumer`` skips that hop; it is an optional third side (``--impls``) that
shows how much of the gap is that hop and how much is the rest.
"""

from __future__ import annotations

import json
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

MAX_BROADCAST = 100_000
GROUP_PREFIX = "bench-plain."


def plain_group(name: str) -> str:
    """The Channels group of bench group ``name`` (names come from the bench client only)."""
    return GROUP_PREFIX + name


class PlainConsumer(AsyncWebsocketConsumer):
    """Served at ``/bench/plain``."""

    async def connect(self) -> None:
        self.joined: list[str] = []
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        request: dict[str, Any] = json.loads(text_data or "{}")
        op = request.get("op")
        if op == "join":
            group = plain_group(str(request["group"]))
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
            await self.send(text_data=json.dumps({"op": "joined"}))
        elif op == "broadcast":
            count = request.get("count")
            if not isinstance(count, int) or not 0 < count <= MAX_BROADCAST:
                await self.send(text_data=json.dumps({"op": "error", "error": "bad count"}))
                return
            group = plain_group(str(request["group"]))
            started = time.time()
            for seq in range(count):
                await self.channel_layer.group_send(
                    group, {"type": "bench.tick", "payload": {"i": seq, "t": time.time()}}
                )
            elapsed = time.time() - started
            await self.send(text_data=json.dumps({"op": "done", "sent": count, "seconds": elapsed}))
        else:
            await self.send(text_data=json.dumps({"op": "error", "error": f"unknown op {op!r}"}))

    async def bench_tick(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event["payload"]))

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)


class PlainNoDbConsumer(PlainConsumer):
    """``PlainConsumer`` without the per-message ``close_old_connections`` thread hop.

    Served at ``/bench/plain-nodb``.
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
