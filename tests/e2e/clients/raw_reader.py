"""A SignalR JSON client on the ``websockets`` library that either reads everything (``read``)
or stops reading after it subscribed (``stall``: its socket's receive buffer is shrunk and the
library stops taking frames after one, so the server's writes pile up).

python raw_reader.py '<json config>'
  config: {url, token, taskId, mode: "read" | "stall", target: event name to count}
stdout: {"event": "subscribed"}; in "read" mode {"event": "count", n} every 10 events of
``target`` and {"event": "closed", error, allowReconnect} when the server closes with a Close;
in "stall" mode nothing more until {"cmd": "read"} on stdin, then it reads on and reports its
Close like "read"; {"event": "ended"} when the connection ends without a Close (the server
dropped it).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from urllib.parse import urlsplit

from raw_signalr import SEP, emit, negotiate  # beside this script
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def main(config: dict) -> None:
    url, token = config["url"], config["token"]
    connection_token = negotiate(url, token)
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    if config["mode"] == "stall":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws_url = f"ws://{parts.hostname}:{parts.port}{parts.path}?id={connection_token}&access_token={token}"
    async with connect(
        ws_url, sock=sock, max_queue=1, max_size=None, open_timeout=10, ping_interval=None
    ) as ws:
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + SEP)
        assert (await asyncio.wait_for(ws.recv(), 10)).startswith("{}")
        invocation = {
            "type": 1,
            "invocationId": "1",
            "target": "SubscribeToTask",
            "arguments": [config["taskId"]],
        }
        await ws.send(json.dumps(invocation) + SEP)
        buffer = ""
        subscribed = False
        while not subscribed:
            buffer += await asyncio.wait_for(ws.recv(), 10)
            *records, buffer = buffer.split(SEP)
            subscribed = any(json.loads(r).get("invocationId") == "1" for r in records if r)
        emit(event="subscribed")
        if config["mode"] == "stall":
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.readline)  # {"cmd": "read"}
        try:
            await read_on(ws, buffer, config["target"])
        except ConnectionClosed:
            emit(event="ended")


async def read_on(ws, buffer: str, target: str) -> None:
    """Count ``target`` events until the server's Close (reported) or the connection's end."""
    if True:
        count = 0
        async for frame in ws:
            buffer += frame if isinstance(frame, str) else frame.decode()
            *records, buffer = buffer.split(SEP)
            for raw in records:
                if not raw:
                    continue
                record = json.loads(raw)
                if record.get("type") == 1 and record.get("target") == target:
                    count += 1
                    if count % 10 == 0:
                        emit(event="count", n=count)
                elif record.get("type") == 7:
                    emit(
                        event="closed", error=record.get("error"), allowReconnect=record.get("allowReconnect")
                    )
                    return


asyncio.run(main(json.loads(sys.argv[1])))
