"""Client process of the connection benchmark (``bench/connect.py``): opens, holds and closes
WebSockets to one server when the driver says so.

    BENCH_CONNECT_TOKENS=tokens.json python -m bench.connect_client --side conduit --url http://127.0.0.1:PORT

The driver writes one JSON command per line on stdin; every command is answered with one JSON
line on stdout (``{"reply": <cmd>, ...}``; the process says ``{"reply": "ready"}`` first):

- ``{"cmd": "connect", "count": n, "concurrency": c, "timeout": s}``: open ``n`` more connections,
  at most ``c`` of them in flight at once (connecting, not yet established), all within ``s``
  seconds. Answered with what happened: established, failures by kind, 503 refusals honoured,
  first attempt and last success (``time.time()``), per-connection connect times, CPU used.
- ``{"cmd": "status"}``: connections open, closes this process did not ask for (by reason),
  frames received, pings and pongs sent, CPU seconds so far.
- ``{"cmd": "leave", "timeout": s, "drop_http": bool}``: close every connection at once (all the
  close handshakes started together), wait at most ``s`` seconds; ``drop_http`` also closes the
  pooled keep-alive HTTP connections (negotiate), so that the server is left with no socket.
- ``{"cmd": "exit"}``.

What one connection does, per side (raw protocol over aiohttp, no compression):

- ``conduit``: what the official JS client does in a browser. ``POST <hub>/negotiate?negotiateVersion=1``
  with ``Authorization: Bearer <token>``, then the WebSocket
  ``<hub>?id=<connectionToken>&access_token=<token>``, the JSON handshake
  ``{"protocol":"json","version":1}`` and its answer ``{}``. The tokens are those of a JSON list in
  the file ``BENCH_CONNECT_TOKENS`` names (``BENCH_CONNECT_TOKEN``: one token), used in turn:
  connection ``j`` of this process takes token ``(--token-offset + j * --token-stride) % len``.
  Admission control is honoured: a 503 from negotiate (or the WebSocket upgrade) with
  ``Retry-After``, or a handshake answered and then closed with ``allowReconnect`` and "Retry after
  N" in its error, makes the client wait that long plus a random share of it (between once and
  twice the delay, as the project's JS helper ``conduit.mjs`` does; 1 s when no delay is given),
  without holding a slot of the concurrency limit, and start again with a new negotiate. That is
  counted as ``refused`` (retried), not as a failure, unless the connection's own deadline
  (``--step-timeout``) runs out first (failure ``refused-gave-up``). Idle, it answers nothing
  and sends a Ping record ``{"type":6}`` every ``--ping-interval`` s (15, the official clients'
  keep-alive), the first one at a random moment of the first interval so that the pings are
  spread; it reads whatever the server sends (its Pings).
- ``plain``: the WebSocket upgrade to ``--plain-path`` (``bench.plain_consumer.PlainConsumer``),
  accepted: nothing more (that protocol needs no first message). aiohttp answers the server's
  protocol-level pings (daphne's, every 20 s).
- ``socketio``: ``/socket.io/?EIO=4&transport=websocket`` directly (no polling), the Engine.IO open
  packet, ``40`` (connect to the default namespace), its answer ``40{...}``. Idle, it answers each
  Engine.IO ping ``2`` with ``3``, as python-socketio's client does.

A connection that the server closes, or that breaks, while this process did not ask for it is
counted in ``unexpected`` by reason. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

if __package__ in (None, ""):  # run as a file: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.common import RS
from bench.ping_slots import PING_RECORD, PingSlots

SIDES = ("conduit", "plain", "socketio")
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
#: How long a 503 is honoured when it carries no (readable) Retry-After (s).
DEFAULT_RETRY_AFTER = 1.0
#: "Retry after N" in a Close's error (the server's words, as ``conduit.mjs`` reads them).
RETRY_AFTER_TEXT = re.compile(r"retry\W{0,3}after\W{0,3}(\d{1,4})", re.IGNORECASE)
#: Connect times kept (ms, 0.1 ms resolution) per command, for the driver's percentiles.
MAX_TIMES = 100_000


class Failure(Exception):
    """A connection attempt failed; ``kind`` names how (``negotiate-http-500``, ``ws-timeout``...)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Refused(Exception):
    """The server answered 503 (admission control): try again after ``retry_after`` seconds."""

    def __init__(self, step: str, retry_after: float, reason: str = "") -> None:
        super().__init__(f"{step} refused, retry after {retry_after} s")
        self.step = step
        self.retry_after = retry_after
        self.reason = reason  # the server's words (the 503 body's "error", the Close's error)


def retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    return max(0.0, when.timestamp() - time.time())


def classify(step: str, exc: BaseException) -> str:
    """The failure kind of an exception raised during ``step``."""
    if isinstance(exc, Failure):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return f"{step}-timeout"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"{step}-http-{exc.status}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{step}-http-{exc.status}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{step}-connect-error-{exc.os_error.errno}" if exc.os_error.errno else f"{step}-connect-error"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{step}-disconnected"
    if isinstance(exc, OSError) and exc.errno:
        return f"{step}-oserror-{exc.errno}"
    return f"{step}-{type(exc).__name__}"


class Conn:
    """One established connection and its reader task."""

    __slots__ = ("leaving", "reader", "slot", "ws")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.leaving = False
        self.slot = -1
        self.reader: asyncio.Task[None] | None = None


class Worker:
    """The connections of this process and the counters the driver asks for."""

    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
        self.side: str = args.side
        self.session = session
        self.base = args.url.rstrip("/")
        self.ws_base = "ws" + self.base[len("http") :] if self.base.startswith("http") else self.base
        self.tokens = load_tokens()
        self.token_next: int = args.token_offset
        self.token_stride: int = max(1, args.token_stride)
        self.jitter: bool = args.retry_jitter
        self.hub_path: str = args.hub_path
        self.plain_path: str = args.plain_path
        self.step_timeout: float = args.step_timeout
        self.close_timeout: float = args.close_timeout
        self.ping_interval: float = args.ping_interval
        self.rng = random.Random(args.seed)
        self.conns: set[Conn] = set()
        self.unexpected: Counter[str] = Counter()
        self.frames_in = 0
        self.pongs_sent = 0
        self.pinger: PingSlots | None = None
        if self.side == "conduit" and self.ping_interval > 0:
            self.pinger = PingSlots(self.ping_interval, self.rng)

    # ------------------------------------------------------------------------------ connecting

    def _ws_timeout(self) -> aiohttp.ClientWSTimeout:
        return aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.close_timeout)

    async def _ws_connect(self, url: str, step: str) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self.session.ws_connect(
                url, compress=0, autoping=True, timeout=self._ws_timeout(), max_msg_size=1024 * 1024
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 503:
                headers = exc.headers or {}
                raise Refused(step, retry_after(headers.get("Retry-After"))) from exc
            raise

    async def _receive_text(self, ws: aiohttp.ClientWebSocketResponse, step: str) -> str:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise Failure(f"{step}-closed", f"code {ws.close_code}")
        raise Failure(f"{step}-unexpected-{msg.type.name.lower()}")

    async def _open_conduit(self) -> aiohttp.ClientWebSocketResponse:
        token = self.tokens[self.token_next % len(self.tokens)] if self.tokens else ""
        self.token_next += self.token_stride
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Requested-With": "XMLHttpRequest",
            "X-SignalR-User-Agent": "Microsoft SignalR/8.0 (bench; Python; aiohttp)",
            "Content-Type": "text/plain;charset=UTF-8",
        }
        step = "negotiate"
        try:
            url = f"{self.base}{self.hub_path}/negotiate?negotiateVersion=1"
            async with self.session.post(url, headers=headers, data=b"") as response:
                if response.status == 503:
                    raise Refused(
                        step,
                        retry_after(response.headers.get("Retry-After")),
                        error_of(await response.read()),
                    )
                if response.status != 200:
                    await response.read()
                    raise Failure(f"negotiate-http-{response.status}")
                body = orjson.loads(await response.read())
            connection_token = body.get("connectionToken")
            if not isinstance(connection_token, str):
                raise Failure("negotiate-bad-answer", str(body)[:200])
            step = "ws"
            ws_url = (
                f"{self.ws_base}{self.hub_path}?id={quote(connection_token, safe='')}"
                f"&access_token={quote(token, safe='')}"
            )
            ws = await self._ws_connect(ws_url, step)
        except (Refused, Failure):
            raise
        except Exception as exc:
            raise Failure(classify(step, exc), str(exc)[:200]) from exc
        try:
            await ws.send_str(common.HANDSHAKE)
            text = await self._receive_text(ws, "handshake")
            records = [orjson.loads(r) for r in text.split(RS) if r]
            if not records or records[0] != {}:
                raise Failure("handshake-refused", str(records[:1])[:200])
            if len(records) == 1:
                records += buffered_records(ws)
            for record in records[1:]:
                if record.get("type") == 7:  # turned away right after the handshake
                    error = str(record.get("error") or "")
                    asked = RETRY_AFTER_TEXT.search(error)
                    if record.get("allowReconnect") and asked:
                        raise Refused("ws-close", float(asked.group(1)), error[:80])
                    raise Failure("handshake-closed", error[:200])
        except BaseException as exc:
            await _abort(ws)
            if isinstance(exc, Failure | Refused | asyncio.CancelledError):
                raise
            raise Failure(classify("handshake", exc), str(exc)[:200]) from exc
        return ws

    async def _open_plain(self) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self._ws_connect(self.ws_base + self.plain_path, "ws")
        except (Refused, Failure):
            raise
        except Exception as exc:
            raise Failure(classify("ws", exc), str(exc)[:200]) from exc

    async def _open_socketio(self) -> aiohttp.ClientWebSocketResponse:
        try:
            ws = await self._ws_connect(self.ws_base + SIO_PATH, "ws")
        except (Refused, Failure):
            raise
        except Exception as exc:
            raise Failure(classify("ws", exc), str(exc)[:200]) from exc
        try:
            opened = await self._receive_text(ws, "eio-open")
            if not opened.startswith("0"):
                raise Failure("eio-open-unexpected", opened[:200])
            await ws.send_str("40")
            while True:
                text = await self._receive_text(ws, "sio-connect")
                if text.startswith("40"):
                    break
                if text == "2":
                    await ws.send_str("3")
                    continue
                raise Failure("sio-connect-refused", text[:200])
        except BaseException as exc:
            await _abort(ws)
            if isinstance(exc, Failure | asyncio.CancelledError):
                raise
            raise Failure(classify("sio-connect", exc), str(exc)[:200]) from exc
        return ws

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        if self.side == "conduit":
            return await self._open_conduit()
        if self.side == "plain":
            return await self._open_plain()
        return await self._open_socketio()

    def _adopt(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        conn = Conn(ws)
        self.conns.add(conn)
        if self.pinger is not None:
            self.pinger.add(conn)
        conn.reader = asyncio.create_task(self._read(conn))

    async def connect(self, count: int, concurrency: int, limit: float) -> dict[str, Any]:
        """Open ``count`` connections, at most ``concurrency`` in flight; the figures of it."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(max(1, concurrency))
        cpu0, wall0 = time.process_time(), time.time()
        figures: dict[str, Any] = {"first_attempt": None, "last_success": None}
        failures: Counter[str] = Counter()
        examples: dict[str, str] = {}
        refused: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        refused_conns = 0
        times: list[float] = []
        established = 0

        async def one() -> None:
            nonlocal established, refused_conns
            started: float | None = None  # the first attempt (waiting for a slot does not count)
            deadline = math.inf
            was_refused = False
            while True:
                wait = 0.0
                async with gate:
                    now = time.time()
                    if started is None:
                        started, deadline = now, loop.time() + self.step_timeout
                    if figures["first_attempt"] is None or now < figures["first_attempt"]:
                        figures["first_attempt"] = now
                    remaining = deadline - loop.time()
                    try:
                        if remaining <= 0:
                            raise TimeoutError
                        ws = await asyncio.wait_for(self._open(), remaining)
                    except Refused as exc:
                        refused[exc.step] += 1
                        reasons[f"{exc.step}: {exc.reason}" if exc.reason else exc.step] += 1
                        if not was_refused:
                            was_refused = True
                            refused_conns += 1
                        wait = exc.retry_after or DEFAULT_RETRY_AFTER
                        if self.jitter:
                            wait += self.rng.random() * wait
                        if loop.time() + wait >= deadline:
                            failures["refused-gave-up"] += 1
                            return
                    except Failure as exc:
                        failures[exc.kind] += 1
                        examples.setdefault(exc.kind, str(exc)[:300])
                        return
                    except TimeoutError:
                        failures["step-timeout"] += 1
                        return
                    else:
                        done = time.time()
                        figures["last_success"] = max(figures["last_success"] or done, done)
                        established += 1
                        if len(times) < MAX_TIMES:
                            times.append(round((done - started) * 1000.0, 1))
                        self._adopt(ws)
                        return
                await asyncio.sleep(wait)  # the slot is free while the client waits

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        unfinished = 0
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=limit)
            unfinished = len(pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if unfinished:
            failures["phase-timeout"] += unfinished
        return {
            "attempted": count,
            "established": established,
            "failed": sum(failures.values()),
            "failures": dict(failures),
            "failure_examples": examples,
            "refused": sum(refused.values()),
            "refused_by_step": dict(refused),
            "refused_reasons": dict(reasons),
            "refused_connections": refused_conns,
            **figures,
            "wall_s": round(time.time() - wall0, 3),
            "cpu_s": round(time.process_time() - cpu0, 3),
            "connect_ms": sorted(times),
            "open": len(self.conns),
        }

    # ------------------------------------------------------------------------------ idle

    async def _read(self, conn: Conn) -> None:
        ws = conn.ws
        reason = ""
        try:
            async for msg in ws:
                self.frames_in += 1
                if msg.type is aiohttp.WSMsgType.TEXT:
                    data = msg.data
                    if self.side == "socketio":
                        if data == "2":
                            await ws.send_str("3")
                            self.pongs_sent += 1
                        elif data.startswith("1") or data.startswith("41"):
                            reason = "server-close-packet"
                    elif self.side == "conduit" and data != PING_RECORD:
                        for record in common.signalr_records(data):
                            if record.get("type") == 7:
                                reason = f"close-message: {str(record.get('error'))[:60]}"
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    reason = f"ws-error: {type(ws.exception()).__name__}"
                    break
            if not reason:
                reason = f"closed-{ws.close_code}"
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
            "unexpected": dict(self.unexpected),
            "unexpected_total": sum(self.unexpected.values()),
            "frames_in": self.frames_in,
            "pings_sent": self.pinger.sent if self.pinger else 0,
            "pongs_sent": self.pongs_sent,
            "ping_errors": self.pinger.errors if self.pinger else 0,
            "cpu_s": round(time.process_time(), 3),
            "rss_kib": common.rss_kib(os.getpid()),
            "time": time.time(),
        }

    # ------------------------------------------------------------------------------ leaving

    async def leave(self, limit: float, drop_http: bool) -> dict[str, Any]:
        """Close every connection at once; the figures of it."""
        conns = list(self.conns)
        cpu0, started = time.process_time(), time.time()
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
        closed_at = time.time()
        readers = [c.reader for c in conns if c.reader is not None and not c.reader.done()]
        if readers:
            _, pending_readers = await asyncio.wait(readers, timeout=5)
            for task in pending_readers:
                task.cancel()
        abnormal = sum(1 for c in conns if c.ws.close_code not in (1000, 1001))
        if drop_http and self.session.connector is not None:
            await self.session.connector.close()
        return {
            "closing": len(conns),
            "timed_out": timed_out,
            "errors": dict(errors),
            "abnormal_close_codes": abnormal,
            "started": started,
            "closed_at": closed_at,
            "seconds": round(closed_at - started, 3),
            "cpu_s": round(time.process_time() - cpu0, 3),
            "open": len(self.conns),
        }


async def _abort(ws: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 2)


def error_of(body: bytes) -> str:
    """The ``error`` of a JSON answer (a 503's reason), shortened; "" if there is none."""
    try:
        found = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:80].decode("utf-8", errors="replace")
    return str(found.get("error", ""))[:80] if isinstance(found, dict) else ""


def load_tokens() -> list[str]:
    """The conduit side's access tokens: the JSON list in ``$BENCH_CONNECT_TOKENS``, else
    ``$BENCH_CONNECT_TOKEN``."""
    path = os.environ.get("BENCH_CONNECT_TOKENS")
    if path:
        tokens = json.loads(Path(path).read_text())
        return [str(t) for t in tokens]
    token = os.environ.get("BENCH_CONNECT_TOKEN")
    return [token] if token else []


def buffered_records(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """SignalR records of the text frames that already arrived after the handshake answer (the
    server sends a refusal's Close right behind it), without waiting for more: aiohttp has no
    public peek, so this reads its queue's buffer, and finds nothing if that ever changes."""
    buffer = getattr(getattr(ws, "_reader", None), "_buffer", None)
    found: list[dict[str, Any]] = []
    for item in list(buffer or ()):
        msg = item[0] if isinstance(item, tuple) else item
        if getattr(msg, "type", None) is aiohttp.WSMsgType.TEXT and isinstance(msg.data, str):
            found += [orjson.loads(r) for r in msg.data.split(RS) if r]
    return found


async def serve_commands(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(kind: str, body: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"reply": kind, **body}) + "\n")
        sys.stdout.flush()

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as session:
        worker = Worker(args, session)
        reply("ready", {"pid": os.getpid()})
        while True:
            line = await reader.readline()
            if not line:
                break  # the driver went away
            command = json.loads(line)
            cmd = command.get("cmd")
            try:
                if cmd == "connect":
                    body = await worker.connect(
                        int(command["count"]), int(command["concurrency"]), float(command["timeout"])
                    )
                elif cmd == "status":
                    body = worker.status()
                elif cmd == "leave":
                    body = await worker.leave(float(command["timeout"]), bool(command.get("drop_http")))
                elif cmd == "exit":
                    reply("exit", {})
                    break
                else:
                    body = {"error": f"unknown command {cmd!r}"}
            except Exception as exc:  # noqa: BLE001 - any failure is reported; the driver decides
                body = {"error": f"{type(exc).__name__}: {exc}"}
            reply(str(cmd), body)
        if worker.pinger is not None:
            worker.pinger.cancel()
        for conn in list(worker.conns):
            conn.leaving = True
        await asyncio.gather(*(_abort(c.ws) for c in list(worker.conns)), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = common.client_parser(__doc__)
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--hub-path", default="/hubs/tasks", help="conduit: the hub's path")
    parser.add_argument("--plain-path", default="/bench/plain", help="plain: the consumer's path")
    parser.add_argument("--step-timeout", type=float, default=30.0, help="one connection, retries included")
    parser.add_argument("--close-timeout", type=float, default=20.0, help="one close handshake")
    parser.add_argument("--ping-interval", type=float, default=15.0, help="conduit: seconds between Pings")
    parser.add_argument("--max-connections", type=int, default=10_000, help="for the open-file limit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token-offset", type=int, default=0, help="conduit: the first token's index")
    parser.add_argument("--token-stride", type=int, default=1, help="conduit: token index step")
    parser.add_argument(
        "--retry-jitter", action=argparse.BooleanOptionalAction, default=True,
        help="wait Retry-After plus up to as much again (as conduit.mjs), or exactly Retry-After",
    )  # fmt: skip
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the client's event loop"
    )
    args = parser.parse_args(argv)
    common.raise_nofile(args.max_connections + 256)
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_commands(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
