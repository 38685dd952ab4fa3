"""Client process of the acknowledged-delivery benchmark: N receivers plus one trigger, one run.

    python -m bench.acked_client --url ws://127.0.0.1:PORT --side hub-ack --n 100 --m 200 --group g1

Sides (``bench/acked.py`` explains them):

- ``hub`` / ``hub-ack``: ``/bench/acked-hub`` (``AckBenchHub``), raw SignalR JSON over aiohttp.
  Receivers ``Join`` the group; the trigger invokes ``AckedBroadcast(group, m, ack)``. On
  ``hub-ack`` every receiver acknowledges every ``Tick`` it receives, right after parsing it, with a
  *non-blocking* invocation ``{"type":1,"target":"AcknowledgeMessage","arguments":[messageId]}``
  (no invocation id, so no completion comes back); acks for the records of one frame go out in
  one frame (the server writes one record per frame, so in practice one ack per frame).
- ``sio-ack`` / ``sio``: the python-socketio server (``bench/socketio_app.py``), a raw Socket.IO v5
  / Engine.IO v4 client over aiohttp (WebSocket transport only, no polling, default namespace):
  ``42<id>["join",room]`` → ``43<id>[true]``; events arrive as ``42<id>["tick",{...}]`` and on
  ``sio-ack`` are acknowledged at once with ``43<id>[]``; Engine.IO pings (``2``) get pongs
  (``3``). The same parsing work as the hub side: one ``orjson.loads`` per record.

Measured here: deliveries (distinct ``(connection, i)`` receipts, duplicates and receipts with
``retryCount > 0`` counted apart) and their latency (receipt - payload ``t``). On the ack sides the
client then polls the server's ``ack_progress`` until every ack was processed (or nothing moved for
``--idle`` s), reads the pending-store count (hub), and fetches the server's ack timings
(``ack_stats``): acked msgs/s = acks cleared / (last ack processed - first send), ack latency =
server time once the ack was processed - server send time of that message.

Prints one JSON object (the result) on stdout. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

if __package__ in (None, ""):  # run as a file (``python bench/acked_client.py``): make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import RS, BenchError

SIDES = ("hub", "hub-ack", "hub-ack-batch", "sio", "sio-ack")
ACK_SIDES = ("hub-ack", "hub-ack-batch", "sio-ack")
HUB_PATH = "/bench/acked-hub"
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
POLL_INTERVAL = 0.1


class Tally(common.Tally):
    """Deliveries of the run, plus the receipts of retried messages and the acks sent."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__(n, m)
        self.retries = 0
        self.acks_sent = 0

    def record(self, seen: bytearray, index: Any, sent: Any, now: float, retry_count: Any = 0) -> bool:
        valid = super().record(seen, index, sent, now)
        if valid and isinstance(retry_count, int) and retry_count > 0:
            self.retries += 1
        return valid

    def counts(self) -> dict[str, int]:
        counts = super().counts()
        return {
            "received": counts["received"],
            "lost": counts["lost"],
            "duplicates": counts["duplicates"],
            "retries": self.retries,
            "unexpected": counts["unexpected"],
            "acks_sent": self.acks_sent,
        }


class Conn:
    """One WebSocket, its reader task, and calls waiting for their answer by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, tally: Tally, acking: bool) -> None:
        self.ws = ws
        self.tally = tally
        self.acking = acking
        self.seen = bytearray(tally.m)
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.opened: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self.on_text(msg.data, time.time())
        finally:
            error = BenchError("the server closed the connection")
            for future in [self.opened, *self.waiting.values()]:
                if not future.done():
                    future.set_exception(error)

    async def on_text(self, data: str, now: float) -> None:
        raise NotImplementedError

    def _answer(self, key: str, value: Any) -> None:
        future = self.waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    async def _call(self, key: str, frame: str, limit: float, what: str) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[key] = future
        await self.ws.send_str(frame)
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError as exc:
            raise BenchError(f"no answer to {what} within {limit:.0f} s") from exc
        finally:
            self.waiting.pop(key, None)

    async def wait_open(self, limit: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.opened), limit)
        except TimeoutError as exc:
            raise BenchError(f"no handshake within {limit:.0f} s") from exc

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()

    # The operations every side offers.
    async def join(self, group: str, limit: float) -> None:
        raise NotImplementedError

    async def broadcast(self, group: str, count: int, ack: bool, limit: float) -> dict[str, Any]:
        raise NotImplementedError

    async def ack_progress(self, limit: float) -> dict[str, Any]:
        raise NotImplementedError

    async def ack_stats(self, limit: float) -> dict[str, Any]:
        raise NotImplementedError

    async def pending_count(self, limit: float) -> int | None:
        return None


class HubConn(Conn):
    """Raw SignalR JSON protocol."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        tally: Tally,
        acking: bool,
        batching: bool = False,
        window: float = 0.0,
    ) -> None:
        # ``hub-ack-batch``: the ids received since the last flush are acknowledged together, with
        # one non-blocking ``AcknowledgeMessages``: once the frames already received are read
        # (``window`` 0), or ``window`` seconds after the first id of the batch arrived.
        self.batching = batching
        self.window = window
        self._batch: list[str] = []
        super().__init__(ws, tally, acking)

    async def start(self, limit: float) -> None:
        await self.ws.send_str(common.HANDSHAKE)
        await self.wait_open(limit)

    def _batch_ack(self, message_id: str) -> None:
        if not self._batch:
            loop = asyncio.get_running_loop()
            if self.window > 0:
                loop.call_later(self.window, self._flush_batch)
            else:
                loop.call_soon(self._flush_batch)
        self._batch.append(message_id)

    def _flush_batch(self) -> None:
        ids, self._batch = self._batch, []
        self.tally.acks_sent += len(ids)
        frame = '{"type":1,"target":"AcknowledgeMessages","arguments":[' + json.dumps(ids) + "]}" + RS
        asyncio.get_running_loop().create_task(self.ws.send_str(frame))

    async def on_text(self, data: str, now: float) -> None:
        acks: list[str] = []
        for obj in common.signalr_records(data):
            kind = obj.get("type")
            if kind == 1 and obj.get("target") == "Tick":
                body = obj["arguments"][0]
                self.tally.record(self.seen, body.get("i"), body.get("t"), now, body.get("retryCount"))
                message_id = body.get("messageId")
                if self.acking and self.batching and isinstance(message_id, str):
                    self._batch_ack(message_id)
                elif self.acking and isinstance(message_id, str):
                    acks.append(
                        '{"type":1,"target":"AcknowledgeMessage","arguments":['
                        + json.dumps(message_id)
                        + "]}"
                        + RS
                    )
            elif kind == 3:
                self._answer(str(obj.get("invocationId")), obj)
            elif kind is None and not self.opened.done():  # the handshake answer
                if obj:
                    self.opened.set_exception(BenchError(f"handshake refused: {obj}"))
                else:
                    self.opened.set_result(None)
            elif kind == 7:
                for future in self.waiting.values():
                    if not future.done():
                        future.set_exception(BenchError(f"closed by the server: {obj}"))
        if acks:
            self.tally.acks_sent += len(acks)
            await self.ws.send_str("".join(acks))

    async def invoke(self, target: str, arguments: list[Any], limit: float) -> Any:
        invocation_id = str(self.next_id)
        self.next_id += 1
        frame = common.signalr_invocation(invocation_id, target, arguments)
        answer = await self._call(invocation_id, frame, limit, target)
        if "error" in answer:
            raise BenchError(f"{target} failed: {answer['error']}")
        return answer.get("result")

    async def join(self, group: str, limit: float) -> None:
        await self.invoke("Join", [group], limit)

    async def broadcast(self, group: str, count: int, ack: bool, limit: float) -> dict[str, Any]:
        return dict(await self.invoke("AckedBroadcast", [group, count, ack], limit))

    async def ack_progress(self, limit: float) -> dict[str, Any]:
        return dict(await self.invoke("AckProgress", [], limit))

    async def ack_stats(self, limit: float) -> dict[str, Any]:
        return dict(await self.invoke("AckStats", [], limit))

    async def pending_count(self, limit: float) -> int | None:
        return int(await self.invoke("PendingCount", [], limit))


class SioConn(Conn):
    """Raw Socket.IO v5 over Engine.IO v4, WebSocket transport, default namespace."""

    async def start(self, limit: float) -> None:
        await self.wait_open(limit)  # the Engine.IO open packet, then the namespace connect

    async def on_text(self, data: str, now: float) -> None:
        kind = data[:1]
        if kind == "4":  # Engine.IO message: a Socket.IO packet
            await self._packet(data[1:], now)
        elif kind == "2":  # Engine.IO ping
            await self.ws.send_str("3")
        elif kind == "0":  # Engine.IO open: connect to the default namespace
            await self.ws.send_str("40")
        elif kind == "1" and not self.opened.done():
            self.opened.set_exception(BenchError("Engine.IO close"))

    async def _packet(self, packet: str, now: float) -> None:
        kind = packet[:1]
        start = 1
        while start < len(packet) and packet[start].isdigit():
            start += 1
        ack_id = packet[1:start]
        if kind == "2":  # event
            event = orjson.loads(packet[start:])
            if event and event[0] == "tick":
                body = event[1]
                self.tally.record(self.seen, body.get("i"), body.get("t"), now)
                if self.acking and ack_id:
                    self.tally.acks_sent += 1
                    await self.ws.send_str("43" + ack_id + "[]")
        elif kind == "3":  # ack of one of our emits
            self._answer(ack_id, orjson.loads(packet[start:]))
        elif kind == "0" and not self.opened.done():
            self.opened.set_result(None)
        elif kind == "4" and not self.opened.done():
            self.opened.set_exception(BenchError(f"connect refused: {packet}"))

    async def emit(self, event: str, arguments: list[Any], limit: float) -> Any:
        ack_id = str(self.next_id)
        self.next_id += 1
        answer = await self._call(ack_id, "42" + ack_id + json.dumps([event, *arguments]), limit, event)
        return answer[0] if answer else None

    async def join(self, group: str, limit: float) -> None:
        await self.emit("join", [group], limit)

    async def broadcast(self, group: str, count: int, ack: bool, limit: float) -> dict[str, Any]:
        answer = dict(await self.emit("broadcast", [{"room": group, "count": count, "ack": ack}], limit))
        if "error" in answer:
            raise BenchError(f"broadcast failed: {answer['error']}")
        return answer

    async def ack_progress(self, limit: float) -> dict[str, Any]:
        return dict(await self.emit("ack_progress", [], limit))

    async def ack_stats(self, limit: float) -> dict[str, Any]:
        return dict(await self.emit("ack_stats", [], limit))


async def _open(
    session: aiohttp.ClientSession,
    base: str,
    side: str,
    tally: Tally,
    acking: bool,
    limit: float,
    window: float = 0.0,
) -> Conn:
    hub = side.startswith("hub")
    url = base + (HUB_PATH if hub else SIO_PATH)
    ws = await asyncio.wait_for(session.ws_connect(url, compress=0, autoping=True), limit)
    conn: HubConn | SioConn = (
        HubConn(ws, tally, acking, batching=side == "hub-ack-batch", window=window)
        if hub
        else SioConn(ws, tally, acking)
    )
    await conn.start(limit)
    return conn


async def _wait_acks(control: Conn, expected: int, args: argparse.Namespace) -> str:
    """Poll the server until every ack was processed; the status of that phase."""
    deadline = time.monotonic() + args.ack_timeout
    last_change, last_cleared = time.monotonic(), -1
    while True:
        progress = await control.ack_progress(args.step_timeout)
        cleared = int(progress.get("cleared", 0))
        now = time.monotonic()
        if cleared >= expected:
            return "ok"
        if cleared != last_cleared:
            last_change, last_cleared = now, cleared
        if now - last_change >= args.idle:
            return "unacked"
        if now >= deadline:
            return "ack-timeout"
        await asyncio.sleep(POLL_INTERVAL)


async def _wait_pending_zero(control: Conn, args: argparse.Namespace) -> int | None:
    """The pending-store count, polled until it is 0 (or ``--idle`` s passed)."""
    deadline = time.monotonic() + args.idle
    while True:
        count = await control.pending_count(args.step_timeout)
        if count is None or count == 0 or time.monotonic() >= deadline:
            return count
        await asyncio.sleep(POLL_INTERVAL)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    side: str = args.side
    acking = side in ACK_SIDES
    tally = Tally(args.n, args.m)
    result: dict[str, Any] = {"side": side, "n": args.n, "m": args.m, "expected": tally.expected}
    base = args.url.rstrip("/")

    def open_conn(session: aiohttp.ClientSession, receiver: bool) -> Awaitable[Conn]:
        return _open(session, base, side, tally, acking and receiver, args.step_timeout, args.ack_window)

    def cpu() -> common.CpuSample:
        return common.sample_cpu(args.server_pid, args.redis_pid, machine=True)

    async def measure(control: Conn, receivers: list[Conn]) -> str:
        """Trigger the sends, wait for the deliveries and (ack sides) the acks; the run's status."""
        before = cpu()
        trigger = asyncio.create_task(control.broadcast(args.group, args.m, acking, args.timeout))
        deadline = before.wall + args.timeout
        status = await common.await_deliveries(tally, trigger, receivers, deadline, args.idle, result)
        try:  # the trigger's answer comes once the server's send loop is done
            answer = await asyncio.wait_for(asyncio.shield(trigger), max(1.0, deadline - time.time()))
            result["send_s"] = round(float(answer.get("seconds", math.nan)), 4)
        except (TimeoutError, BenchError) as exc:
            trigger.cancel()
            result.setdefault("error", f"broadcast: {exc or type(exc).__name__}")
            if status == "ok":
                status = "trigger-failed"

        # Ack sides: wait until the server processed every ack, then read its timings.
        if acking and status in ("ok", "lost"):
            ack_status = await _wait_acks(control, tally.expected, args)
            result["pending_left"] = await _wait_pending_zero(control, args)
            if ack_status != "ok" and status == "ok":
                status = ack_status
        result.update(common.cpu_shares(before, cpu()))
        if "machine_cpu_share" in result:
            # Everything else on the machine (other processes), in cores: a noisy neighbour shows.
            ours = sum(result.get(k) or 0.0 for k in ("client_cpu_share", "server_cpu_share"))
            if side.startswith("hub"):
                ours += result.get("redis_cpu_share") or 0.0
            result["other_cpu_share"] = round(max(0.0, result["machine_cpu_share"] - ours), 3)
        if acking and status in ("ok", "lost", "unacked", "ack-timeout"):
            result.update(_ack_figures(await control.ack_stats(args.step_timeout), tally.expected))
        return status

    return await common.run_receivers(args, tally, result, open_conn, measure)


def _ack_figures(stats: dict[str, Any], expected: int) -> dict[str, Any]:
    """Acked msgs/s and ack latency percentiles from the server's ``ack_stats``."""
    latencies = sorted(float(x) for x in stats.get("latencies") or [])
    cleared = int(stats.get("cleared", 0))
    first, last = stats.get("firstSent"), stats.get("lastAck")
    window = float(last) - float(first) if first is not None and last is not None else 0.0
    return {
        "acks_cleared": cleared,
        "acks_unknown": int(stats.get("unknown", 0)),
        "acks_unmatched": int(stats.get("unmatched", 0)),
        "acks_missing": expected - cleared,
        "ack_window_s": round(window, 4),
        "acked_per_s": round(cleared / window, 1) if window > 0 else None,
        **common.latency_figures(latencies, "ack_"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = common.client_parser(__doc__)
    parser.add_argument("--side", choices=SIDES, required=True)
    common.add_receiver_arguments(parser, m_help="messages sent to the group")
    parser.add_argument("--redis-pid", type=int, default=None, help="Redis' pid, for its CPU share")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds from trigger to give up")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet seconds = lost / unacked")
    parser.add_argument("--ack-timeout", type=float, default=60.0, help="seconds to wait for the acks")
    parser.add_argument(
        "--ack-window", type=float, default=0.0, help="hub-ack-batch: seconds a batch gathers ids"
    )
    common.add_limit_arguments(parser, step_help="one connect/handshake/call")
    return common.client_main(parser, argv, run)


if __name__ == "__main__":
    sys.exit(main())
