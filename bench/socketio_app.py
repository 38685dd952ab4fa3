"""The python-socketio baseline of ``bench/acked.py``: an ``AsyncServer`` (``async_mode="asgi"``).

    daphne bench.socketio_app:application        # what bench/acked.py starts (or uvicorn)

One process, python-socketio's default in-process manager (no Redis, no message queue), default
JSON (stdlib ``json``), no Django. Socket.IO events on the default namespace:

- ``join(room)``: ``enter_room``; acknowledged with ``true``.
- ``broadcast({"room", "count", "ack"})``: ``count`` ``tick`` events to ``room``, in order, each
  ``{"i": n, "t": <time.time() before the sends of message n>}``. With ``ack`` false: one
  ``emit("tick", data, room=room)`` per message (fire-and-forget). With ``ack`` true: for each
  message, one ``emit("tick", data, to=sid, callback=...)`` per member of the room (python-socketio
  supports callbacks only when addressing one client), awaited together with ``asyncio.gather``
  (``BENCH_SIO_FANOUT=loop``: one after the other, about 20 % slower); the callback notes the
  wall time at which the server processed that client's ack. Acknowledged with
  ``{"sent": count, "seconds": loop time}`` once the loop is done.
- ``ack_progress()`` → ``{"acks", "cleared"}``; ``ack_stats()`` → the same shape as
  ``AckBenchHub.AckStats`` (``bench/bench_hub.py``): latencies are callback time minus send time.

HTTP: ``GET /bench/stats`` (open WebSockets, pid) and ``POST /bench/reset`` (forget the last run;
409 while a socket is open), like ``bench/asgi.py``. Module-level state: one run at a time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from typing import Any

import socketio

Scope = dict[str, Any]
Receive = Any
Send = Any

#: Largest ``count`` one broadcast accepts (a bound, not a tuning knob).
MAX_BROADCAST = 100_000

#: How the per-client emits of one acknowledged message are awaited: ``gather`` (concurrently, the
#: default: what python-socketio itself does for a room) or ``loop`` (one after the other).
FANOUT = os.environ.get("BENCH_SIO_FANOUT", "gather")
if FANOUT not in ("gather", "loop"):
    raise RuntimeError(f"BENCH_SIO_FANOUT must be gather or loop, not {FANOUT!r}")

sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)

#: Acks the server processed since the last broadcast: (sid, message index, wall time).
_ACKS: list[tuple[str, int, float]] = []
#: Message index → send time (``t`` of its payload) for the last broadcast.
_SENT: dict[int, float] = {}
#: Open WebSocket connections (an ASGI websocket call is alive ⇔ its socket is open).
_OPEN = {"websocket": 0}


def _on_ack(sid: str, index: int, *_args: Any) -> None:
    _ACKS.append((sid, index, time.time()))


@sio.event
async def join(sid: str, room: str) -> bool:
    await sio.enter_room(sid, room)
    return True


@sio.event
async def broadcast(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    room = data.get("room")
    count = data.get("count")
    ack = data.get("ack")
    if not isinstance(room, str) or not isinstance(count, int) or not 0 < count <= MAX_BROADCAST:
        return {"error": f"room must be a string and count an integer in 1..{MAX_BROADCAST}"}
    _ACKS.clear()
    _SENT.clear()
    started = time.time()
    if ack:
        members = [member for member, _ in sio.manager.get_participants("/", room)]
        for index in range(count):
            sent = time.time()
            payload = {"i": index, "t": sent}
            sends = [
                sio.emit("tick", payload, to=member, callback=functools.partial(_on_ack, member, index))
                for member in members
            ]
            if FANOUT == "gather":
                await asyncio.gather(*sends)
            else:
                for send in sends:
                    await send
            _SENT[index] = sent
    else:
        for index in range(count):
            sent = time.time()
            await sio.emit("tick", {"i": index, "t": sent}, room=room)
            _SENT[index] = sent
    return {"sent": count, "seconds": time.time() - started}


@sio.event
async def ack_progress(sid: str) -> dict[str, int]:
    return {"acks": len(_ACKS), "cleared": len(_ACKS)}


@sio.event
async def ack_stats(sid: str) -> dict[str, Any]:
    latencies = [round(at - _SENT[index], 6) for _, index, at in _ACKS if index in _SENT]
    distinct = len({(member, index) for member, index, _ in _ACKS})
    return {
        "sent": len(_SENT),
        "acks": len(_ACKS),
        "cleared": distinct,
        "unknown": len(_ACKS) - distinct,
        "unmatched": len(_ACKS) - len(latencies),
        "firstSent": min(_SENT.values()) if _SENT else None,
        "lastAck": max((at for _, _, at in _ACKS), default=None),
        "latencies": latencies,
    }


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def http_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/bench/stats`` and ``/bench/reset``; 404 for anything else."""
    if scope["type"] != "http":
        return
    while True:  # drain the request body
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    route = (scope.get("method"), scope.get("path"))
    open_sockets = {k: v for k, v in _OPEN.items() if v}
    if route == ("GET", "/bench/stats"):
        await _reply(send, 200, {"pid": os.getpid(), "open": open_sockets, "server": "python-socketio"})
    elif route == ("POST", "/bench/reset"):
        if open_sockets:
            await _reply(send, 409, {"error": "connections are open", "open": open_sockets})
            return
        _ACKS.clear()
        _SENT.clear()
        await _reply(send, 200, {"reset": True})
    else:
        await _reply(send, 404, {"error": "not found"})


_socketio_app = socketio.ASGIApp(sio, other_asgi_app=http_app)


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """The Socket.IO app, with open WebSockets counted for ``/bench/stats``."""
    if scope["type"] != "websocket":
        await _socketio_app(scope, receive, send)
        return
    _OPEN["websocket"] += 1
    try:
        await _socketio_app(scope, receive, send)
    finally:
        _OPEN["websocket"] -= 1
