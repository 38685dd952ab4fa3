"""Many SignalR JSON connections in one process (asyncio and aiohttp, no SignalR library), held
open as the official clients hold theirs: for ``tests/e2e/test_many_connections.py``.

python many_clients.py '<json config>'
  config: {url: the hub's URL (http://host:port/hubs/tasks), tokens: [..] (connection j uses
           tokens[j % len(tokens)]), count, concurrency (connections being opened at once),
           pingIntervalS (15: the official clients' keep-alive), stepTimeoutS (one connection's
           negotiate, WebSocket and handshake), target (the server event to count)}

Each connection does what the official JS client does: ``POST <url>/negotiate?negotiateVersion=1``
with the token as a Bearer header (over a pooled keep-alive HTTP connection), the WebSocket
``<url>?id=<connectionToken>&access_token=<token>``, the JSON handshake and its ``{}``. Then it
sends a Ping record every ``pingIntervalS`` (the first at a random moment of the first interval,
so the pings are spread), and reads everything: the server's Pings, its Close, and the
``target`` invocations, which it counts.

Commands on stdin, one JSON object a line; each is answered by one event on stdout:

- ``{"cmd": "connect", "timeoutS": s}`` -> ``{"event": "connected", established, failures: {kind: n},
  examples: {kind: text}, seconds, open, connectMs: {p50, p99, max}, cpuS, slowest: [[seconds,
  started at (s into the phase), [negotiate, WebSocket, handshake seconds], outcome], ...]}``
  once every connection is open or failed (none is tried again), or at the deadline (the rest
  count as ``phase-timeout``). The pooled HTTP connections are closed then, so only the
  WebSockets stay open.
- ``{"cmd": "status"}`` -> ``{"event": "status", open, unexpected: {reason: n}, pingsSent,
  pingErrors, serverPings, serverPinged (connections that got at least one), closeMessages, cpuS}``.
- ``{"cmd": "await", "timeoutS": s}`` -> ``{"event": "delivered", open, delivered (connections that got
  ``target``), duplicates (further copies), payloads (its first argument's ``nonce`` -> n), firstAt,
  lastAt (``time.time()``)}`` once every open connection got it, or at the deadline.
- ``{"cmd": "leave", "timeoutS": s}`` -> ``{"event": "left", closing, timedOut, errors, abnormal
  (close codes other than 1000 or 1001), seconds, open}``: every close handshake started at once.
- ``{"cmd": "stop"}`` -> ``{"event": "stopped"}``, then the process exits (closing what is open).

A connection that ends while this process did not ask for it is counted in ``unexpected`` by
reason. Every wait is bounded. The loop is uvloop's when it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from bench.ping_slots import PING_RECORD, PingSlots  # the repository root is on PYTHONPATH

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS


def emit(event: str, **body: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **body}) + "\n")
    sys.stdout.flush()


def records(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(part) for part in text.split(RS) if part]


def percentiles(seconds: list[float]) -> dict[str, float]:
    """Median, 99th percentile and maximum of ``seconds``, in milliseconds."""
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def at(share: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)

    return {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


class Failure(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Conn:
    __slots__ = ("close_error", "leaving", "pinged", "reader", "received", "slot", "ws")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.leaving = False
        self.slot = -1
        self.received = 0
        self.pinged = False
        self.close_error: str | None = None  # the error of the server's Close, if one came
        self.reader: asyncio.Task[None] | None = None


class Pool:
    """The connections of this process and what they saw."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.url: str = config["url"].rstrip("/")
        self.ws_url = "ws" + self.url[len("http") :]
        self.tokens: list[str] = list(config["tokens"])
        self.count = int(config["count"])
        self.concurrency = max(1, int(config.get("concurrency", 16)))
        self.step_timeout = float(config.get("stepTimeoutS", 30))
        self.ping_interval = float(config.get("pingIntervalS", 15))
        self.target: str = config.get("target", "Broadcast")
        self.rng = random.Random(config.get("seed", 0))
        # Negotiates over pooled keep-alive connections (closed after the connect phase); the
        # WebSockets in a session of their own, so closing the pool leaves them alone.
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, keepalive_timeout=60)
        )
        self.wss = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        self.conns: set[Conn] = set()
        self.unexpected: Counter[str] = Counter()
        self.close_messages = 0
        self.server_pings = 0
        self.delivered = 0
        self.duplicates = 0
        self.payloads: Counter[str] = Counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.all_delivered = asyncio.Event()
        self.pinger: PingSlots | None = None
        if self.ping_interval > 0:
            self.pinger = PingSlots(self.ping_interval, self.rng)

    # ------------------------------------------------------------------------------ connecting

    async def _open(self, token: str, steps: list[float]) -> aiohttp.ClientWebSocketResponse:
        """One connection, opened; the seconds each step took are appended to ``steps``
        (negotiate, WebSocket, handshake)."""
        step = "negotiate"
        mark = time.monotonic()

        def lap() -> None:
            nonlocal mark
            now = time.monotonic()
            steps.append(round(now - mark, 3))
            mark = now

        try:
            async with self.http.post(
                f"{self.url}/negotiate?negotiateVersion=1",
                headers={"Authorization": f"Bearer {token}", "X-Requested-With": "XMLHttpRequest"},
                data=b"",
            ) as response:
                body = await response.read()
                if response.status != 200:
                    raise Failure(f"negotiate-http-{response.status}", body[:200].decode(errors="replace"))
            connection_token = orjson.loads(body)["connectionToken"]
            lap()
            step = "ws"
            ws = await self.wss.ws_connect(
                f"{self.ws_url}?id={quote(connection_token, safe='')}&access_token={quote(token, safe='')}",
                compress=0,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=20),
                max_msg_size=1024 * 1024,
            )
            lap()
        except Failure:
            raise
        except aiohttp.WSServerHandshakeError as exc:
            raise Failure(f"ws-http-{exc.status}", str(exc)[:200]) from exc
        except (aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            raise Failure(f"{step}-{type(exc).__name__}", str(exc)[:200]) from exc
        try:
            await ws.send_str(HANDSHAKE)
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise Failure(f"handshake-{msg.type.name.lower()}", f"close code {ws.close_code}")
            found = records(str(msg.data))
            if not found or found[0] != {}:
                raise Failure("handshake-refused", str(found[:1])[:200])
            if any(r.get("type") == 7 for r in found[1:]):
                raise Failure("handshake-closed", str(found[1:])[:200])
            lap()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
            if isinstance(exc, Failure | asyncio.CancelledError):
                raise
            raise Failure(f"handshake-{type(exc).__name__}", str(exc)[:200]) from exc
        return ws

    def _adopt(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        conn = Conn(ws)
        self.conns.add(conn)
        if self.pinger is not None:
            self.pinger.add(conn)
        conn.reader = asyncio.create_task(self._read(conn))

    async def connect(self, limit: float) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.concurrency)
        failures: Counter[str] = Counter()
        examples: dict[str, str] = {}
        started = time.monotonic()
        established = 0
        times: list[float] = []
        #: (seconds, when it started after the phase's start, its steps' seconds, outcome)
        slowest: list[tuple[float, float, list[float], str]] = []

        def note(began: float, steps: list[float], outcome: str) -> None:
            took = time.monotonic() - began
            slowest.append((round(took, 3), round(began - started, 2), steps, outcome))
            if len(slowest) > 20:
                slowest.sort(reverse=True)
                del slowest[10:]

        async def one(index: int) -> None:
            nonlocal established
            async with gate:
                began, steps = time.monotonic(), []
                try:
                    ws = await asyncio.wait_for(
                        self._open(self.tokens[index % len(self.tokens)], steps), self.step_timeout
                    )
                except Failure as exc:
                    failures[exc.kind] += 1
                    examples.setdefault(exc.kind, str(exc)[:300])
                    note(began, steps, exc.kind)
                    return
                except TimeoutError:
                    failures["step-timeout"] += 1
                    note(began, steps, "step-timeout")
                    return
                times.append(time.monotonic() - began)
                note(began, steps, "ok")
            established += 1
            self._adopt(ws)

        tasks = [asyncio.create_task(one(i)) for i in range(self.count)]
        _, pending = await asyncio.wait(tasks, timeout=limit)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            failures["phase-timeout"] += len(pending)
        await self.http.close()  # the keep-alive negotiate connections: the server keeps only WebSockets
        return {
            "established": established,
            "failures": dict(failures),
            "examples": examples,
            "seconds": round(time.monotonic() - started, 2),
            "open": len(self.conns),
            "connectMs": percentiles(times),
            "cpuS": round(time.process_time(), 2),
            "slowest": sorted(slowest, reverse=True)[:10],
        }

    # ------------------------------------------------------------------------------ idle, reading

    def _take(self, conn: Conn, text: str) -> None:
        if text == PING_RECORD:
            self.server_pings += 1
            conn.pinged = True
            return
        for record in records(text):
            kind = record.get("type")
            if kind == 6:
                self.server_pings += 1
                conn.pinged = True
            elif kind == 7:
                self.close_messages += 1
                conn.close_error = str(record.get("error"))[:60]
            elif kind == 1 and record.get("target") == self.target:
                now = time.time()
                args = record.get("arguments") or [{}]
                nonce = args[0].get("nonce") if isinstance(args[0], dict) else None
                self.payloads[str(nonce)] += 1
                conn.received += 1
                if conn.received > 1:
                    self.duplicates += 1
                    continue
                self.delivered += 1
                self.first_at = self.first_at or now
                self.last_at = now
                if self.delivered >= len(self.conns):
                    self.all_delivered.set()

    async def _read(self, conn: Conn) -> None:
        ws = conn.ws
        reason = ""
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._take(conn, msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    reason = f"ws-error: {type(ws.exception()).__name__}"
                    break
            reason = reason or f"closed-{ws.close_code}"
            if conn.close_error is not None:
                reason = f"close-message: {conn.close_error}"
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except (aiohttp.ClientError, OSError, RuntimeError, ValueError) as exc:
            reason = f"reader-{type(exc).__name__}"
        finally:
            self.conns.discard(conn)
            if self.pinger is not None:
                self.pinger.discard(conn)
            if not conn.leaving:
                self.unexpected[reason] += 1

    def status(self) -> dict[str, Any]:
        return {
            "open": len(self.conns),
            "unexpected": {k: v for k, v in self.unexpected.items() if v},
            "pingsSent": self.pinger.sent if self.pinger else 0,
            "pingErrors": self.pinger.errors if self.pinger else 0,
            "serverPings": self.server_pings,
            "serverPinged": sum(1 for c in self.conns if c.pinged),
            "closeMessages": self.close_messages,
            "cpuS": round(time.process_time(), 2),
        }

    async def await_delivery(self, limit: float) -> dict[str, Any]:
        if self.delivered < len(self.conns):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_delivered.wait(), limit)
        return {
            "open": len(self.conns),
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "payloads": dict(self.payloads),
            "firstAt": self.first_at,
            "lastAt": self.last_at,
        }

    # ------------------------------------------------------------------------------ leaving

    async def leave(self, limit: float) -> dict[str, Any]:
        conns = list(self.conns)
        started = time.monotonic()
        for conn in conns:
            conn.leaving = True
        closes = [asyncio.create_task(conn.ws.close()) for conn in conns]
        errors: Counter[str] = Counter()
        timed_out = 0
        if closes:
            done, pending = await asyncio.wait(closes, timeout=limit)
            timed_out = len(pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if task.exception() is not None:
                    errors[type(task.exception()).__name__] += 1
        seconds = round(time.monotonic() - started, 2)
        readers = [c.reader for c in conns if c.reader is not None and not c.reader.done()]
        if readers:
            _, stuck = await asyncio.wait(readers, timeout=5)
            for task in stuck:
                task.cancel()
        return {
            "closing": len(conns),
            "timedOut": timed_out,
            "errors": dict(errors),
            "abnormal": sum(1 for c in conns if c.ws.close_code not in (1000, 1001)),
            "seconds": seconds,
            "open": len(self.conns),
        }

    async def close(self) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
        for conn in list(self.conns):
            conn.leaving = True
        await asyncio.gather(
            *(asyncio.wait_for(c.ws.close(), 2) for c in list(self.conns)), return_exceptions=True
        )
        await self.http.close()
        await self.wss.close()


async def main(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    pool = Pool(config)
    emit("ready", pid=os.getpid())
    try:
        while line := await stdin.readline():
            command = json.loads(line)
            cmd, limit = command.get("cmd"), float(command.get("timeoutS", 30))
            if cmd == "connect":
                emit("connected", **await pool.connect(limit))
            elif cmd == "status":
                emit("status", **pool.status())
            elif cmd == "await":
                emit("delivered", **await pool.await_delivery(limit))
            elif cmd == "leave":
                emit("left", **await pool.leave(limit))
            elif cmd == "stop":
                break
            else:
                emit("error", error=f"unknown command {cmd!r}")
    finally:
        await pool.close()
        emit("stopped")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (it leaves more of the machine to the server)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main(json.loads(sys.argv[1])))
