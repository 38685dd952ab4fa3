"""Client process of the fan-out benchmark: N receivers plus one trigger connection, one run.

    python -m bench.client --url ws://127.0.0.1:PORT --impl hub --n 100 --m 100 --group g1

Opens ``n`` receiver sockets (aiohttp, no compression), joins each to ``group`` (the hub through
a raw SignalR JSON ``Join`` invocation, the plain consumer through ``{"op": "join"}``), then opens
one more socket that is *not* a member and asks the server to broadcast ``m`` messages (the hub's
``Broadcast`` invocation, the plain consumer's ``{"op": "broadcast"}``): the loop of group sends
runs inside the server process for both sides. Every event carries the sender's ``time.time()``
as ``t``; latency is receipt time minus ``t``. Both sides are parsed the same way (one
``orjson.loads`` per record), so client overhead is equal.

The run ends when all ``n * m`` deliveries arrived (``ok``), when the trigger finished and nothing
arrived for ``--idle`` seconds (``lost``), or ``--timeout`` seconds after the trigger (``timeout``).
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

if __package__ in (None, ""):  # run as a file (``python bench/client.py``): make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import BenchError, Tally

PATHS = {"hub": "/bench/hub", "plain": "/bench/plain", "plain-nodb": "/bench/plain-nodb"}


class Conn:
    """One WebSocket to the server, with its reader task and a queue of non-event replies."""

    def __init__(self, impl: str, ws: aiohttp.ClientWebSocketResponse, tally: Tally) -> None:
        self.hub = impl == "hub"
        self.ws = ws
        self.tally = tally
        self.seen = bytearray(tally.m)
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.next_id = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data)
        finally:
            self.replies.put_nowait({"closed": True})

    def _on_text(self, data: str) -> None:
        now = time.time()
        if self.hub:
            for obj in common.signalr_records(data):
                kind = obj.get("type")
                if kind == 1 and obj.get("target") == "Tick":
                    body = obj["arguments"][0]
                    self.tally.record(self.seen, body.get("i"), body.get("t"), now)
                elif kind != 6:  # pings are ignored; handshake, completions and closes are replies
                    self.replies.put_nowait(obj)
        else:
            obj = orjson.loads(data)
            if "i" in obj:
                self.tally.record(self.seen, obj.get("i"), obj.get("t"), now)
            else:
                self.replies.put_nowait(obj)

    async def reply(self, limit: float) -> dict[str, Any]:
        try:
            answer = await asyncio.wait_for(self.replies.get(), limit)
        except TimeoutError as exc:
            raise BenchError(f"no reply within {limit:.0f} s") from exc
        if answer.get("closed"):
            raise BenchError("the server closed the connection")
        return answer

    async def handshake(self, limit: float) -> None:
        await self.ws.send_str(common.HANDSHAKE)
        answer = await self.reply(limit)
        if answer:
            raise BenchError(f"handshake refused: {answer}")

    async def invoke(self, target: str, arguments: list[Any], limit: float) -> Any:
        invocation_id = str(self.next_id)
        self.next_id += 1
        await self.ws.send_str(common.signalr_invocation(invocation_id, target, arguments))
        answer = await self.reply(limit)
        if answer.get("type") != 3 or answer.get("invocationId") != invocation_id:
            raise BenchError(f"unexpected answer to {target}: {answer}")
        if "error" in answer:
            raise BenchError(f"{target} failed: {answer['error']}")
        return answer.get("result")

    async def request(self, op: dict[str, Any], expect: str, limit: float) -> dict[str, Any]:
        await self.ws.send_str(json.dumps(op))
        answer = await self.reply(limit)
        if answer.get("op") != expect:
            raise BenchError(f"unexpected answer to {op['op']}: {answer}")
        return answer

    async def join(self, group: str, limit: float) -> None:
        if self.hub:
            await self.invoke("Join", [group], limit)
        else:
            await self.request({"op": "join", "group": group}, "joined", limit)

    async def broadcast(self, group: str, count: int, limit: float) -> dict[str, Any]:
        if self.hub:
            return dict(await self.invoke("Broadcast", [group, count], limit))
        return await self.request({"op": "broadcast", "group": group, "count": count}, "done", limit)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def _open(session: aiohttp.ClientSession, url: str, impl: str, tally: Tally, limit: float) -> Conn:
    ws = await asyncio.wait_for(session.ws_connect(url, compress=0, autoping=True), limit)
    conn = Conn(impl, ws, tally)
    if conn.hub:
        await conn.handshake(limit)
    return conn


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.url.rstrip("/") + PATHS[args.impl]
    tally = Tally(args.n, args.m)
    result: dict[str, Any] = {"impl": args.impl, "n": args.n, "m": args.m, "expected": tally.expected}

    def open_conn(session: aiohttp.ClientSession, receiver: bool) -> Awaitable[Conn]:
        return _open(session, url, args.impl, tally, args.step_timeout)

    async def measure(control: Conn, receivers: list[Conn]) -> str:
        """Trigger the broadcast in the server and wait for the deliveries; the run's status."""
        before = common.sample_cpu(args.server_pid)
        trigger = asyncio.create_task(control.broadcast(args.group, args.m, args.timeout))
        deadline = before.wall + args.timeout
        status = await common.await_deliveries(tally, trigger, receivers, deadline, args.idle, result)
        after = common.sample_cpu(args.server_pid)
        if trigger.done() and not trigger.cancelled() and trigger.exception() is None:
            answer = trigger.result()
            result["send_s"] = round(float(answer.get("seconds", math.nan)), 4)
        else:
            trigger.cancel()
        result.update(common.cpu_shares(before, after))
        return status

    return await common.run_receivers(args, tally, result, open_conn, measure)


def main(argv: list[str] | None = None) -> int:
    parser = common.client_parser(__doc__)
    parser.add_argument("--impl", choices=sorted(PATHS), required=True)
    common.add_receiver_arguments(parser, m_help="messages broadcast to the group")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds from trigger to give up")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet seconds after the trigger = lost")
    common.add_limit_arguments(parser, step_help="one connect/handshake/join")
    return common.client_main(parser, argv, run)


if __name__ == "__main__":
    sys.exit(main())
