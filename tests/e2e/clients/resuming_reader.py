"""A SignalR JSON client on the ``websockets`` library that follows a task, stops reading its
socket, and after the server closed it reconnects and resumes, as the JS helper
(``hubs/static/conduit/conduit.mjs``) does: it processes the task's stream in ``seq`` order,
dedupes by ``messageId``, acknowledges every copy of an acknowledged message, and after a
reconnect calls ``ResumeTask(taskId, lastSeq, epoch)`` with the last seq it processed in order.

python resuming_reader.py '<json config>'
  config: {url, token, taskId, stallAfter: the seq after which it stops reading,
           endTimeout: seconds it waits, reading again, for the first connection's end}

stdout, one JSON object a line:
- {"event": "subscribed"}: the first connection (a 4 kB receive buffer) joined the task's group.
- {"event": "stalled", lastSeq, epoch}: it processed the stream up to ``stallAfter`` (and its
  acks of those messages were answered) and reads nothing more until {"cmd": "read"} on stdin.
- then, reading again: {"event": "closed", error, allowReconnect, lastSeq, epoch} at the server's
  Close, {"event": "ended", ...} when the connection ended without one, or {"event": "silent",
  ...} when neither came within ``endTimeout`` (it then drops the connection itself).
- {"cmd": "reconnect"}: a new connection (same token), {"event": "connected"}, then
  ``ResumeTask`` at once; every server event on it is reported as {"event": "message", conn: 2,
  target, messageId, seq, epoch, requiresAck, retryCount} (payloads left out), the answer as
  {"event": "resumed", answer} (or {"event": "error", error}), each ``AcknowledgeMessages``
  answer as {"event": "acked", ids, pending}, a Close as {"event": "closed", ...}.
Every message of either connection is reported as "message" (``conn`` 1 or 2); "processed"
lists the seqs handed on in order, once each: {"event": "processed", conn, seqs}.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from raw_signalr import SEP, emit, negotiate  # beside this script
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class StreamOrder:
    """One stream's position, as the JS helper's ``StreamOrder``: messages handed on in ``seq``
    order, those ahead of a gap held until it is filled; a new epoch starts the count again."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.last_seq: int | None = None
        self.waiting: dict[int, dict[str, Any]] = {}

    def accept(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        seq = payload.get("seq")
        if not isinstance(seq, int):
            return [payload]
        epoch = payload.get("epoch")
        if self.epoch is not None and epoch and epoch != self.epoch:
            self.waiting.clear()
            self.last_seq = None
        if epoch:
            self.epoch = epoch
        if self.last_seq is None:
            self.last_seq = seq - 1
        if seq <= self.last_seq:
            return []  # a copy of a slot already handed on
        self.waiting.setdefault(seq, payload)
        ready = []
        while self.last_seq + 1 in self.waiting:
            self.last_seq += 1
            ready.append(self.waiting.pop(self.last_seq))
        return ready

    def skip_to(self, seq: int, epoch: str | None) -> list[dict[str, Any]]:
        """After ``{"recovered": false, seq, epoch}``: continue from the server's position."""
        if epoch and epoch != self.epoch:
            self.epoch = epoch
            self.waiting = {s: p for s, p in self.waiting.items() if p.get("epoch") == epoch}
        ready = [self.waiting.pop(s) for s in sorted(s for s in self.waiting if s <= seq)]
        self.last_seq = max(self.last_seq or 0, seq)
        while self.last_seq + 1 in self.waiting:
            self.last_seq += 1
            ready.append(self.waiting.pop(self.last_seq))
        return ready


class Reader:
    def __init__(self, config: dict[str, Any]) -> None:
        self.url: str = config["url"]
        self.token: str = config["token"]
        self.task_id: str = config["taskId"]
        self.stall_after: int = int(config["stallAfter"])
        self.end_timeout: float = float(config.get("endTimeout", 30))
        self.order = StreamOrder()
        self.ids = itertools.count(1)
        self.answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.buffer = ""
        self.conn = 1
        self.acks_in_flight: set[asyncio.Task[None]] = set()

    def position(self) -> dict[str, Any]:
        return {"lastSeq": self.order.last_seq, "epoch": self.order.epoch}

    async def open(self, *, small_buffer: bool) -> ClientConnection:
        connection_token = negotiate(self.url, self.token)
        parts = urlsplit(self.url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        if small_buffer:  # before the handshake: the window the server sees stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ws_url = (
            f"ws://{parts.hostname}:{parts.port}{parts.path}?id={connection_token}&access_token={self.token}"
        )
        ws = await connect(ws_url, sock=sock, max_queue=1, max_size=None, open_timeout=10, ping_interval=None)
        await ws.send(json.dumps({"protocol": "json", "version": 1}) + SEP)
        handshake = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(handshake, str) and handshake.startswith("{}"), handshake
        self.buffer = handshake[handshake.index(SEP) + 1 :]
        return ws

    async def invoke(self, ws: ClientConnection, method: str, *args: Any) -> asyncio.Future[dict[str, Any]]:
        """Send an invocation; the future of its completion (resolved by ``handle``)."""
        call_id = str(next(self.ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.answers[call_id] = future
        invocation = {"type": 1, "invocationId": call_id, "target": method, "arguments": list(args)}
        await ws.send(json.dumps(invocation) + SEP)
        return future

    async def read_frame(self, ws: ClientConnection, timeout: float | None = None) -> list[dict[str, Any]]:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        self.buffer += frame if isinstance(frame, str) else frame.decode()
        *records, self.buffer = self.buffer.split(SEP)
        return [json.loads(r) for r in records if r]

    def handle(self, ws: ClientConnection, records: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Process records; the Close among them, if any (what follows it is ignored)."""
        to_ack: list[str] = []
        processed: list[int] = []
        for record in records:
            kind = record.get("type")
            if kind == 1:
                payload = (record.get("arguments") or [{}])[0]
                emit(
                    event="message",
                    conn=self.conn,
                    target=record.get("target"),
                    messageId=payload.get("messageId"),
                    seq=payload.get("seq"),
                    epoch=payload.get("epoch"),
                    requiresAck=payload.get("requiresAck", False),
                    retryCount=payload.get("retryCount"),
                )
                if payload.get("taskId") == self.task_id:
                    processed.extend(p["seq"] for p in self.order.accept(payload) if "seq" in p)
                if payload.get("requiresAck"):
                    to_ack.append(payload["messageId"])
            elif kind == 3:
                future = self.answers.pop(str(record.get("invocationId")), None)
                if future is not None and not future.done():
                    future.set_result(record)
            elif kind == 7:
                if processed:
                    emit(event="processed", conn=self.conn, seqs=processed)
                return record
        if processed:
            emit(event="processed", conn=self.conn, seqs=processed)
        if to_ack:
            task = asyncio.get_running_loop().create_task(self.acknowledge(ws, to_ack))
            self.acks_in_flight.add(task)
            task.add_done_callback(self.acks_in_flight.discard)
        return None

    async def acknowledge(self, ws: ClientConnection, ids: list[str]) -> None:
        try:
            answer = await (await self.invoke(ws, "AcknowledgeMessages", ids))
        except ConnectionClosed:
            return  # a batch lost with the connection: those come again
        emit(event="acked", conn=self.conn, ids=ids, pending=answer.get("result"), error=answer.get("error"))

    async def first_connection(self) -> None:
        ws = await self.open(small_buffer=True)
        subscribe = await self.invoke(ws, "SubscribeToTask", self.task_id)
        while not subscribe.done():
            self.handle(ws, await self.read_frame(ws, 10))
        answer = subscribe.result()
        assert answer.get("error") is None, answer
        emit(event="subscribed")
        # Process the stream up to stallAfter (and see those acks answered), then stop reading.
        while (self.order.last_seq or 0) < self.stall_after or self.acks_in_flight or self.answers:
            self.handle(ws, await self.read_frame(ws, 30))
        emit(event="stalled", **self.position())
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # {"cmd": "read"}
        await self.read_until_end(ws)

    def emit_close(self, conn: int, close: dict[str, Any]) -> None:
        """Report the server's Close on connection ``conn`` with the stream's position."""
        emit(
            event="closed",
            conn=conn,
            error=close.get("error"),
            allowReconnect=close.get("allowReconnect"),
            **self.position(),
        )

    async def read_until_end(self, ws: ClientConnection) -> None:
        deadline = asyncio.get_running_loop().time() + self.end_timeout
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise TimeoutError
                close = self.handle(ws, await self.read_frame(ws, remaining))
                if close is not None:
                    self.emit_close(1, close)
                    break
        except ConnectionClosed:
            emit(event="ended", conn=1, **self.position())
        except TimeoutError:
            emit(event="silent", conn=1, **self.position())
        ws.transport.abort()  # done with it either way (a silent one: the client gives up on it)

    async def second_connection(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # {"cmd": "reconnect"}
        self.conn = 2
        self.answers.clear()
        ws = await self.open(small_buffer=False)
        emit(event="connected")
        stop = loop.run_in_executor(None, sys.stdin.readline)  # {"cmd": "stop"}
        last_seq, epoch = self.order.last_seq or 0, self.order.epoch
        resume = await self.invoke(ws, "ResumeTask", self.task_id, last_seq, epoch)
        resume.add_done_callback(lambda f: self.resumed(f.result()))
        try:
            while not stop.done():
                try:
                    records = await self.read_frame(ws, 0.5)
                except TimeoutError:
                    continue
                close = self.handle(ws, records)
                if close is not None:
                    self.emit_close(2, close)
                    return
        except ConnectionClosed:
            emit(event="ended", conn=2, **self.position())
            return
        await ws.close()

    def resumed(self, answer: dict[str, Any]) -> None:
        if answer.get("error") is not None:
            emit(event="error", error=answer["error"])
            return
        result = answer.get("result") or {}
        if result.get("recovered") is False:  # the snapshot came before the answer
            ready = self.order.skip_to(int(result.get("seq") or 0), result.get("epoch"))
            emit(event="processed", conn=self.conn, seqs=[p["seq"] for p in ready if "seq" in p])
        emit(event="resumed", answer=result, **self.position())


async def main(config: dict[str, Any]) -> None:
    reader = Reader(config)
    await reader.first_connection()
    await reader.second_connection()


asyncio.run(main(json.loads(sys.argv[1])))
