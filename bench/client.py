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
import contextlib
import json
import math
import os
import resource
import sys
import time
from typing import Any

import aiohttp
import orjson

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
PATHS = {"hub": "/bench/hub", "plain": "/bench/plain", "plain-nodb": "/bench/plain-nodb"}
CONNECT_CONCURRENCY = 64


class BenchError(Exception):
    """A step of the run failed (the message says which)."""


class Tally:
    """Deliveries of the run, across all receivers."""

    def __init__(self, n: int, m: int) -> None:
        self.m = m
        self.expected = n * m
        self.received = 0
        self.duplicates = 0
        self.unexpected = 0
        self.latencies: list[float] = []
        self.first_sent = math.inf
        self.last_recv = 0.0
        self.done = asyncio.Event()

    def record(self, seen: bytearray, seq: Any, sent: Any, now: float) -> None:
        if not isinstance(seq, int) or not 0 <= seq < self.m or not isinstance(sent, float | int):
            self.unexpected += 1
            return
        if seen[seq]:
            self.duplicates += 1
            return
        seen[seq] = 1
        self.received += 1
        self.latencies.append(now - sent)
        self.first_sent = min(self.first_sent, sent)
        self.last_recv = now
        if self.received >= self.expected:
            self.done.set()


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
            for record in data.split(RS):
                if not record:
                    continue
                obj = orjson.loads(record)
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
        await self.ws.send_str(HANDSHAKE)
        answer = await self.reply(limit)
        if answer:
            raise BenchError(f"handshake refused: {answer}")

    async def invoke(self, target: str, arguments: list[Any], limit: float) -> Any:
        invocation_id = str(self.next_id)
        self.next_id += 1
        record = {"type": 1, "invocationId": invocation_id, "target": target, "arguments": arguments}
        await self.ws.send_str(json.dumps(record) + RS)
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


def _server_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) the server process has used so far, from /proc."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


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
    receivers: list[Conn] = []
    control: Conn | None = None
    status = "ok"
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            # 1. Connect and join every receiver (bounded concurrency, bounded total time).
            started = time.time()
            gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

            async def receiver() -> None:
                async with gate:
                    conn = await _open(session, url, args.impl, tally, args.step_timeout)
                    receivers.append(conn)
                    await conn.join(args.group, args.step_timeout)

            joining = [asyncio.create_task(receiver()) for _ in range(args.n)]
            try:
                await asyncio.wait_for(asyncio.gather(*joining), args.connect_timeout)
            except TimeoutError as exc:
                raise BenchError(
                    f"connecting {args.n} receivers took over {args.connect_timeout:.0f} s"
                ) from exc
            finally:
                for task in joining:
                    task.cancel()
                await asyncio.gather(*joining, return_exceptions=True)
            control = await _open(session, url, args.impl, tally, args.step_timeout)
            result["connect_s"] = round(time.time() - started, 3)

            # 2. Trigger the broadcast in the server and wait for the deliveries.
            cpu0, server_cpu0, t0 = time.process_time(), _server_cpu(args.server_pid), time.time()
            trigger = asyncio.create_task(control.broadcast(args.group, args.m, args.timeout))
            deadline = t0 + args.timeout
            trigger_done_at: float | None = None
            while True:
                now = time.time()
                if tally.done.is_set():
                    break
                if now >= deadline:
                    status = "timeout"
                    break
                if trigger.done() and trigger_done_at is None:
                    trigger_done_at = now
                    if trigger.exception() is not None:
                        result["error"] = str(trigger.exception())
                if trigger_done_at is not None and now - max(trigger_done_at, tally.last_recv) >= args.idle:
                    status = "lost" if "error" not in result else "trigger-failed"
                    break
                if all(c.reader.done() for c in receivers):
                    status = "disconnected"
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tally.done.wait(), min(0.25, max(0.01, deadline - now)))
            t1 = time.time()
            cpu1, server_cpu1 = time.process_time(), _server_cpu(args.server_pid)
            if trigger.done() and not trigger.cancelled() and trigger.exception() is None:
                answer = trigger.result()
                result["send_s"] = round(float(answer.get("seconds", math.nan)), 4)
            else:
                trigger.cancel()
            window = t1 - t0
            result["client_cpu_share"] = round((cpu1 - cpu0) / window, 3) if window > 0 else None
            if server_cpu0 is not None and server_cpu1 is not None and window > 0:
                result["server_cpu_share"] = round((server_cpu1 - server_cpu0) / window, 3)
        except BenchError as exc:
            status = "failed"
            result["error"] = str(exc)
        except (aiohttp.ClientError, OSError) as exc:
            status = "failed"
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            conns = receivers + ([control] if control is not None else [])
            closing = asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
            try:
                await asyncio.wait_for(closing, args.close_timeout)
            except TimeoutError:
                result["close_timeout"] = True

    latencies = sorted(tally.latencies)
    duration = tally.last_recv - tally.first_sent if tally.received else 0.0
    result.update(
        status=status,
        received=tally.received,
        lost=tally.expected - tally.received,
        duplicates=tally.duplicates,
        unexpected=tally.unexpected,
        duration_s=round(duration, 4),
        deliveries_per_s=round(tally.received / duration, 1) if duration > 0 else None,
        p50_ms=_ms(_percentile(latencies, 0.50)),
        p99_ms=_ms(_percentile(latencies, 0.99)),
        max_ms=_ms(latencies[-1] if latencies else None),
    )
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port of the bench server")
    parser.add_argument("--impl", choices=sorted(PATHS), required=True)
    parser.add_argument("--n", type=int, required=True, help="receiver connections")
    parser.add_argument("--m", type=int, required=True, help="messages broadcast to the group")
    parser.add_argument("--group", required=True)
    parser.add_argument("--server-pid", type=int, default=None, help="for the server CPU share")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds from trigger to give up")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet seconds after the trigger = lost")
    parser.add_argument("--connect-timeout", type=float, default=90.0)
    parser.add_argument("--step-timeout", type=float, default=30.0, help="one connect/handshake/join")
    parser.add_argument("--close-timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    _raise_nofile(args.n + 256)
    result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
