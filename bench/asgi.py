"""ASGI application of the fan-out benchmark, served by one daphne process.

WebSocket paths: ``/bench/hub`` (``BenchHub``), ``/bench/acked-hub`` (``AckBenchHub``, for
``bench/acked.py``), ``/bench/plain`` (``PlainConsumer``) and ``/bench/plain-nodb``
(``PlainNoDbConsumer``); no session/auth middleware on any of them, so
both sides pay the same (nothing) at connect. HTTP: ``GET /bench/stats`` (open sockets per path,
layer state, pid) and ``POST /bench/reset`` (flush the channel layer; refused with 409 while any
socket is open), which the driver uses to start each run from a clean layer.

    DJANGO_SETTINGS_MODULE=bench.settings daphne bench.asgi:application
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup(set_prefix=False)

from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.bench_hub import AckBenchHub, BenchHub  # noqa: E402
from bench.plain_consumer import PlainConsumer, PlainNoDbConsumer  # noqa: E402

#: Open WebSocket connections by path (an ASGI app instance is alive ⇔ its socket is open).
OPEN: Counter[str] = Counter()

Scope = dict[str, Any]
Receive = Any
Send = Any


class CountOpen:
    """Counts live WebSocket app instances per path, for ``/bench/stats``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = scope.get("path", "?")
        OPEN[key] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            OPEN[key] -= 1
            if OPEN[key] <= 0:
                del OPEN[key]


def layer_state() -> dict[str, Any]:
    layer = get_channel_layer()
    state: dict[str, Any] = {"backend": type(layer).__name__, "capacity": getattr(layer, "capacity", None)}
    if hasattr(layer, "channels"):  # in-memory
        state["channels"] = len(layer.channels)
        state["groups"] = len(layer.groups)
        state["group_members"] = sum(len(members) for members in layer.groups.values())
    if hasattr(layer, "receive_buffer"):  # channels-redis
        state["receive_buffers"] = len(layer.receive_buffer)
    return state


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def http_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/bench/stats`` and ``/bench/reset``; 404 for anything else."""
    while True:  # drain the request body
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    route = (scope.get("method"), scope.get("path"))
    if route == ("GET", "/bench/stats"):
        await _reply(send, 200, {"pid": os.getpid(), "open": dict(OPEN), "layer": layer_state()})
    elif route == ("POST", "/bench/reset"):
        if sum(OPEN.values()):
            await _reply(send, 409, {"error": "connections are open", "open": dict(OPEN)})
            return
        layer = get_channel_layer()
        if layer is not None:
            await layer.flush()
        await _reply(send, 200, {"layer": layer_state()})
    else:
        await _reply(send, 404, {"error": "not found"})


websocket_app = CountOpen(
    URLRouter(
        [
            path("bench/hub", BenchHub.as_asgi()),
            path("bench/acked-hub", AckBenchHub.as_asgi()),
            path("bench/plain", PlainConsumer.as_asgi()),
            path("bench/plain-nodb", PlainNoDbConsumer.as_asgi()),
        ]
    )
)

application = ProtocolTypeRouter({"http": http_app, "websocket": websocket_app})
