"""What the benchmark drivers (``fanout.py``, ``acked.py``, ``connect.py``) and their client processes
(``client.py``, ``acked_client.py``, ``connect_client.py``) share.

- **Drivers:** the server subprocess (``Server``, ``launch_server``, ``stop_server``, ``settle``,
  ``ensure_settled``), JSON requests to it (``http_json``), the client subprocess
  (``run_client_process``), Redis (``redis_ready``, ``redis_pid``, ``forget_redis_keys``), the
  open-file limit, medians and table cells, the command line and the JSON report.
- **Clients:** the shared command-line options, the run itself (``run_receivers``: connect and join
  the receivers, measure, close; ``client_main``), the tally of deliveries (``Tally``), waiting for
  the deliveries (``await_deliveries``), CPU samples (``sample_cpu``, ``cpu_shares``) and SignalR
  JSON framing.

Besides the standard library only ``orjson`` is imported at the top (aiohttp and redis where they
are used), so the drivers do not load aiohttp. The drivers run as scripts (``bench/fanout.py``) and
put the repository root on ``sys.path``; the clients run as ``python -m bench.client`` from the
root: ``bench.common`` imports in both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import orjson

if TYPE_CHECKING:
    import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: How long a freshly started server has to answer ``/bench/stats``.
STARTUP_TIMEOUT = 30.0
#: Packages whose versions every report lists.
BASE_VERSIONS = ("daphne", "channels", "channels-redis", "redis", "Django", "aiohttp", "Twisted")

T = TypeVar("T")


# ================================================================================== drivers
# ------------------------------------------------------------------------------------ plumbing


@dataclass(kw_only=True)
class RunOptions:
    """The command-line options both drivers have (each driver's ``Options`` adds its own)."""

    timeout: float  # seconds per run from the trigger
    idle: float  # quiet seconds after the sends = lost
    redis_url: str
    settle_timeout: float
    connect_timeout: float
    out: Path | None  # the JSON report (default: bench/results/<bench>-<stamp>.json)
    extra: dict[str, Any] = field(default_factory=dict)  # more ``meta`` for the report


def log(text: str) -> None:
    """Progress goes to stderr (the table goes to stdout)."""
    print(text, file=sys.stderr, flush=True)


def utc_stamp() -> str:
    """The run's UTC timestamp, as in the result file names (``20261129-105105``)."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of a JSON request to the bench server; status 0 if it is unreachable."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise the soft open-file limit to ``needed`` (inherited by subprocesses); the new limits.

    When the hard limit is lower, a privileged process raises it too (``CAP_SYS_RESOURCE``); for
    anyone else it stays, and the soft limit goes as high as it allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so that ``finally`` blocks stop the servers."""
    signal.signal(signal.SIGTERM, _terminate)


def versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Python's version and those of ``BASE_VERSIONS`` plus ``extra`` that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in (*BASE_VERSIONS, *extra):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


# ------------------------------------------------------------------------------------ redis


def _redis_client(url: str, timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def _is_local(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost")


def redis_ready(url: str) -> bool:
    """Ping Redis; if it is the local default and not running, start it (as the README says)."""
    import redis

    def ping() -> bool:
        try:
            client = _redis_client(url, 2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    if ping():
        return True
    if not _is_local(url) or (urlsplit(url).port or 6379) != 6379:
        return False
    server = shutil.which("redis-server")
    if server is None:
        return False
    log(f"Redis is not answering at {url}; starting redis-server on 127.0.0.1:6379.")
    command = [server, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379"]
    command += ["--save", "", "--appendonly", "no"]
    subprocess.run(command, check=False, timeout=10, capture_output=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if ping():
            return True
        time.sleep(0.2)
    return False


def redis_pid(url: str) -> int | None:
    """The pid of the Redis server at ``url`` when it runs on this machine (for its CPU share)."""
    import redis

    if not _is_local(url):
        return None
    client = _redis_client(url, 5)
    try:
        pid = int(client.info("server").get("process_id", 0))
    except (redis.RedisError, ValueError):
        return None
    finally:
        client.close()
    return pid if pid and Path(f"/proc/{pid}").exists() else None


def forget_redis_keys(url: str, prefix: str) -> int:
    """Delete the keys ``<prefix>:*`` from the Redis database at ``url``; how many there were."""
    import redis

    client = _redis_client(url, 5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    except redis.RedisError:
        return 0
    finally:
        client.close()


# ------------------------------------------------------------------------------------ servers


@dataclass
class Server:
    """One server subprocess on a loopback port, serving ``/bench/stats`` and ``/bench/reset``."""

    name: str  # what the driver starts it by (a layer, or ``hub`` / ``sio``)
    label: str  # how messages name it (``daphne (redis)``, ``hub server``)
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    restarts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def django_env(redis_url: str | None, *, isolated: bool = False, **settings: str) -> dict[str, str]:
    """The environment of a daphne serving ``bench.asgi`` with ``bench.settings``.

    ``redis_url``: the Redis layer's URL (``None``: the in-memory layer); ``isolated``: drop every
    inherited ``CONDUIT_RT_*`` override first; ``settings``: more variables.
    """
    env = dict(os.environ)
    if isolated:
        for name in [k for k in env if k.startswith("CONDUIT_RT_")]:
            del env[name]  # only the settings given: a stray override would change what is measured
    env.update(DJANGO_SETTINGS_MODULE="bench.settings", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    # The benches measure throughput: their trigger and progress calls must not wait for RATE_LIMIT.
    env["CONDUIT_RT_RATE_LIMIT"] = ""
    env.update(settings)
    env.pop("REDIS_URL", None)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


def daphne_command(port: int, application: str) -> list[str]:
    """A quiet daphne on ``127.0.0.1:port`` serving ``application`` (``module:attribute``)."""
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", application]


def launch_server(
    name: str,
    label: str,
    port: int,
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    check: Callable[[dict[str, Any]], str | None] | None = None,
) -> Server:
    """Start ``command`` (output appended to ``log_path``) and wait until ``/bench/stats`` answers.

    ``check`` sees the first stats body and returns an error or ``None``. On an error, when the
    server exits or does not answer within ``STARTUP_TIMEOUT``: ``RuntimeError``. The server is
    stopped whenever it is not returned (also when SIGTERM or Ctrl-C interrupts the wait).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(name=name, label=label, port=port, proc=proc, log_path=log_path)
    try:
        error = _await_stats(server, check)
    except BaseException:  # SIGTERM / Ctrl-C while waiting: the caller never gets the server to stop
        stop_server(server)
        raise
    if error is not None:
        stop_server(server)
        raise RuntimeError(error)
    return server


def _await_stats(server: Server, check: Callable[[dict[str, Any]], str | None] | None) -> str | None:
    """Poll ``/bench/stats`` until it answers; ``check``'s verdict on the answer (``None``: fine)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return f"{server.label} exited with {server.proc.returncode}; see {server.log_path}"
        status, body = http_json(server.base + "/bench/stats", timeout=2)
        if status == 200:
            return check(body) if check is not None else None
        time.sleep(0.2)
    return f"{server.label} did not answer within {STARTUP_TIMEOUT:.0f} s; see {server.log_path}"


def stop_server(server: Server) -> None:
    """Terminate the server (kill it after 10 s)."""
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


def settle(server: Server, timeout: float) -> bool:
    """Wait until no socket is open on the server, then reset it (``POST /bench/reset``: ``bench.asgi``
    flushes its channel layer, ``bench.socketio_app`` forgets the last run); ``False`` if that did
    not happen in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        status, body = http_json(server.base + "/bench/stats", timeout=5)
        if status == 200 and not body.get("open"):
            status, _ = http_json(server.base + "/bench/reset", method="POST", timeout=10)
            if status == 200:
                return True
        time.sleep(0.25)
    return False


def ensure_settled(server: Server, timeout: float, restart: Callable[[str], Server]) -> Server:
    """The server, clean; when it did not settle in time (or died), a fresh one from
    ``restart(server.name)``, which counts the restart."""
    if settle(server, timeout):
        return server
    log(f"  {server.label} did not settle within {timeout:.0f} s: restarting it")
    stop_server(server)
    fresh = restart(server.name)
    fresh.restarts = server.restarts + 1
    return fresh


# ------------------------------------------------------------------------------------ runs


def rotated(items: Sequence[T], rep: int) -> list[T]:
    """``items`` rotated by ``rep`` places (the order of the sides changes between repetitions)."""
    shift = rep % len(items)
    return [*items[shift:], *items[:shift]]


def run_client_process(command: list[str], base: dict[str, Any], hard_limit: float) -> dict[str, Any]:
    """Run one client process; its result (the last JSON line it printed).

    When it ran over ``hard_limit`` seconds or failed: ``base`` with ``status``
    (``client-killed`` / ``client-error``) and ``error``.
    """
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=hard_limit, check=False
        )
    except subprocess.TimeoutExpired:
        return {**base, "status": "client-killed", "error": f"client ran over {hard_limit:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        return {**base, "status": "client-error", "error": " | ".join(tail) or f"exit {done.returncode}"}
    return dict(json.loads(lines[-1]))


# ------------------------------------------------------------------------------------ figures


def median(values: list[float]) -> float | None:
    """The median, ``None`` for no values."""
    return statistics.median(values) if values else None


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    """The median of ``key`` over the runs that have it."""
    return median([float(r[key]) for r in runs if r.get(key) is not None])


def total_of(runs: list[dict[str, Any]], key: str) -> int | None:
    """The sum of ``key`` over the runs that have it; ``None`` when none has it."""
    values = [int(r[key]) for r in runs if r.get(key) is not None]
    return sum(values) if values else None


def count_statuses(runs: list[dict[str, Any]]) -> dict[str, int]:
    """How many runs ended with each status."""
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r.get("status", "?")] = statuses.get(r.get("status", "?"), 0) + 1
    return statuses


def format_statuses(statuses: dict[str, int]) -> str:
    """``"2 ok, 1 timeout"``."""
    return ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))


def num(value: float | None, fmt: str) -> str:
    """A table cell: ``value`` formatted, ``-`` for none."""
    return "-" if value is None else format(value, fmt)


# ------------------------------------------------------------------------------------ command line


def argument_parser(doc: str | None, *, raw: bool = True) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc`` (kept as written when ``raw``)."""
    description = (doc or "").split("\n\n")[0]
    if raw:
        return argparse.ArgumentParser(
            description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
    return argparse.ArgumentParser(description=description)


def parse_choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated, non-empty list of values from ``allowed``."""

    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {text!r})")
        return values

    return parse


def run_options(
    args: argparse.Namespace, *, quick_idle: float, quick_connect_timeout: float
) -> dict[str, Any]:
    """The ``RunOptions`` fields but ``timeout`` (each driver has its own default) from the parsed
    command line; ``--quick`` caps ``--idle`` and ``--connect-timeout``."""
    quick, idle, connect = bool(args.quick), args.idle, args.connect_timeout
    return {
        "idle": min(idle, quick_idle) if quick else idle,
        "redis_url": args.redis_url,
        "settle_timeout": args.settle_timeout,
        "connect_timeout": min(connect, quick_connect_timeout) if quick else connect,
        "out": args.out,
        "extra": {"quick": args.quick},
    }


def write_report(
    out: Path,
    meta: dict[str, Any],
    summary: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    elapsed: float,
    **sections: Any,
) -> None:
    """Write the JSON report (``meta``, ``summary``, ``sections``, ``runs``) and say where it went."""
    report = {"meta": meta, "summary": summary, **sections, "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{len(runs)} runs in {elapsed:.0f} s; results: {out}")


# ================================================================================== clients

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
#: Receivers connecting at the same time.
CONNECT_CONCURRENCY = 64


class BenchError(Exception):
    """A step of the run failed (the message says which)."""


def client_parser(doc: str | None) -> argparse.ArgumentParser:
    """A client's parser (described by the first paragraph of ``doc``) with its ``--url``."""
    parser = argument_parser(doc, raw=False)
    parser.add_argument("--url", required=True, help="ws://host:port of the bench server")
    return parser


def add_receiver_arguments(parser: argparse.ArgumentParser, *, m_help: str) -> None:
    """``--n``, ``--m`` (described by ``m_help``), ``--group`` and ``--server-pid``."""
    parser.add_argument("--n", type=int, required=True, help="receiver connections")
    parser.add_argument("--m", type=int, required=True, help=m_help)
    parser.add_argument("--group", required=True)
    parser.add_argument("--server-pid", type=int, default=None, help="for the server CPU share")


def add_limit_arguments(parser: argparse.ArgumentParser, *, step_help: str) -> None:
    """``--connect-timeout``, ``--step-timeout`` (described by ``step_help``) and ``--close-timeout``."""
    parser.add_argument("--connect-timeout", type=float, default=90.0)
    parser.add_argument("--step-timeout", type=float, default=30.0, help=step_help)
    parser.add_argument("--close-timeout", type=float, default=20.0)


def signalr_records(data: str) -> Iterator[dict[str, Any]]:
    """The SignalR JSON records of one text frame, parsed (one ``orjson.loads`` each)."""
    for record in data.split(RS):
        if record:
            yield orjson.loads(record)


def signalr_invocation(invocation_id: str, target: str, arguments: list[Any]) -> str:
    """A SignalR JSON invocation record that expects a completion."""
    record = {"type": 1, "invocationId": invocation_id, "target": target, "arguments": arguments}
    return json.dumps(record) + RS


def failure(exc: BaseException) -> str:
    """The ``error`` of a failed run: a ``BenchError``'s message, or the exception's type and text."""
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds, rounded to 0.01 ms."""
    return None if seconds is None else round(seconds * 1000.0, 2)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0..1) of sorted values; ``None`` for none."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_figures(sorted_seconds: list[float], prefix: str = "") -> dict[str, float | None]:
    """``<prefix>p50_ms``, ``<prefix>p99_ms`` and ``<prefix>max_ms`` of sorted latencies."""
    return {
        f"{prefix}p50_ms": ms(percentile(sorted_seconds, 0.50)),
        f"{prefix}p99_ms": ms(percentile(sorted_seconds, 0.99)),
        f"{prefix}max_ms": ms(sorted_seconds[-1] if sorted_seconds else None),
    }


class Tally:
    """Deliveries of the run, across all receivers: message ``i`` (0 <= i < m) sent at ``t``."""

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

    def record(self, seen: bytearray, index: Any, sent: Any, now: float) -> bool:
        """Count one receipt on the connection whose receipts ``seen`` marks; ``False`` if it was not
        a valid one (counted as unexpected)."""
        if not isinstance(index, int) or not 0 <= index < self.m or not isinstance(sent, float | int):
            self.unexpected += 1
            return False
        if seen[index]:
            self.duplicates += 1
            return True
        seen[index] = 1
        self.received += 1
        self.latencies.append(now - sent)
        self.first_sent = min(self.first_sent, sent)
        self.last_recv = now
        if self.received >= self.expected:
            self.done.set()
        return True

    def counts(self) -> dict[str, int]:
        """The counters of the result, in its order."""
        return {
            "received": self.received,
            "lost": self.expected - self.received,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
        }

    def figures(self, status: str) -> dict[str, Any]:
        """The delivery part of the result: status, counters, rate and latency percentiles."""
        duration = self.last_recv - self.first_sent if self.received else 0.0
        return {
            "status": status,
            **self.counts(),
            "duration_s": round(duration, 4),
            "deliveries_per_s": round(self.received / duration, 1) if duration > 0 else None,
            **latency_figures(sorted(self.latencies)),
        }


class Receiver(Protocol):
    """What the shared client steps need of a connection."""

    reader: asyncio.Task[None]

    async def join(self, group: str, limit: float) -> None: ...

    async def close(self) -> None: ...


R = TypeVar("R", bound=Receiver)


async def connect_receivers(
    receivers: list[R],
    count: int,
    open_conn: Callable[[], Awaitable[R]],
    group: str,
    step_timeout: float,
    connect_timeout: float,
) -> None:
    """Open ``count`` connections (``CONNECT_CONCURRENCY`` at a time) into ``receivers`` and join
    each to ``group``; ``BenchError`` when that takes over ``connect_timeout`` s."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def receiver() -> None:
        async with gate:
            conn = await open_conn()
            receivers.append(conn)
            await conn.join(group, step_timeout)

    joining = [asyncio.create_task(receiver()) for _ in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*joining), connect_timeout)
    except TimeoutError as exc:
        raise BenchError(f"connecting {count} receivers took over {connect_timeout:.0f} s") from exc
    finally:
        for task in joining:
            task.cancel()
        await asyncio.gather(*joining, return_exceptions=True)


async def await_deliveries(
    tally: Tally,
    trigger: asyncio.Task[Any],
    receivers: Sequence[Receiver],
    deadline: float,
    idle: float,
    result: dict[str, Any],
) -> str:
    """Wait for the deliveries the ``trigger`` asked for; the status of the run.

    ``ok``: all arrived; ``timeout``: ``deadline`` (``time.time()``) passed; ``lost`` (or
    ``trigger-failed``, its error in ``result["error"]``): the trigger finished and nothing arrived
    for ``idle`` s; ``disconnected``: every receiver's reader ended.
    """
    trigger_done_at: float | None = None
    while True:
        now = time.time()
        if tally.done.is_set():
            return "ok"
        if now >= deadline:
            return "timeout"
        if trigger.done() and trigger_done_at is None:
            trigger_done_at = now
            if trigger.exception() is not None:
                result["error"] = str(trigger.exception())
        if trigger_done_at is not None and now - max(trigger_done_at, tally.last_recv) >= idle:
            return "lost" if "error" not in result else "trigger-failed"
        if all(c.reader.done() for c in receivers):
            return "disconnected"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.done.wait(), min(0.25, max(0.01, deadline - now)))


async def close_all(conns: Sequence[Any], limit: float) -> bool:
    """Close the connections (each has ``close()``); ``False`` if that took over ``limit`` s."""
    closing = asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    try:
        await asyncio.wait_for(closing, limit)
    except TimeoutError:
        return False
    return True


async def run_receivers(
    args: argparse.Namespace,
    tally: Tally,
    result: dict[str, Any],
    open_conn: Callable[[aiohttp.ClientSession, bool], Awaitable[R]],
    measure: Callable[[R, list[R]], Awaitable[str]],
) -> dict[str, Any]:
    """One client run; ``result`` completed with its figures.

    Connects and joins ``args.n`` receivers (``open_conn(session, True)``) and opens one control
    connection that is not a member (``open_conn(session, False)``); ``measure(control, receivers)``
    triggers the sends, adds its figures to ``result`` and returns the status. A failed step gives
    status ``failed`` and an ``error``. Every connection is closed (within ``args.close_timeout``),
    then the tally's figures are added.
    """
    import aiohttp

    receivers: list[R] = []
    control: R | None = None
    status = "ok"
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            # 1. Connect and join every receiver (bounded concurrency, bounded total time).
            started = time.time()
            await connect_receivers(
                receivers,
                args.n,
                lambda: open_conn(session, True),
                args.group,
                args.step_timeout,
                args.connect_timeout,
            )
            control = await open_conn(session, False)
            result["connect_s"] = round(time.time() - started, 3)
            # 2. The script's part: trigger the sends and wait for the deliveries (and acks).
            status = await measure(control, receivers)
        except (BenchError, aiohttp.ClientError, OSError) as exc:
            status = "failed"
            result["error"] = failure(exc)
        finally:
            conns = [*receivers, *([control] if control is not None else [])]
            if not await close_all(conns, args.close_timeout):
                result["close_timeout"] = True

    result.update(tally.figures(status))
    return result


# ------------------------------------------------------------------------------------ cpu


def rss_kib(pid: int | None) -> int | None:
    """VmRSS of ``pid`` in KiB (None without a pid, or when it cannot be read)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used so far, from /proc."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float | None:
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) so far, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSample:
    """CPU counters at one moment (``None``: not measured)."""

    wall: float  # time.time()
    client: float  # this process: time.process_time()
    server: float | None
    redis: float | None = None
    machine: float | None = None


def sample_cpu(server_pid: int | None, redis_pid: int | None = None, machine: bool = False) -> CpuSample:
    """This process's, the server's and (when given) Redis' and the machine's CPU time now."""
    client, server, wall = time.process_time(), process_cpu(server_pid), time.time()
    return CpuSample(
        wall=wall,
        client=client,
        server=server,
        redis=process_cpu(redis_pid),
        machine=machine_busy() if machine else None,
    )


def cpu_shares(before: CpuSample, after: CpuSample) -> dict[str, float | None]:
    """CPU used between two samples, in cores: ``client_cpu_share`` and, where both samples have
    them, ``server_cpu_share``, ``redis_cpu_share`` and ``machine_cpu_share``."""
    window = after.wall - before.wall
    shares: dict[str, float | None] = {
        "client_cpu_share": round((after.client - before.client) / window, 3) if window > 0 else None
    }
    for key, start, end in (
        ("server_cpu_share", before.server, after.server),
        ("redis_cpu_share", before.redis, after.redis),
        ("machine_cpu_share", before.machine, after.machine),
    ):
        if start is not None and end is not None and window > 0:
            shares[key] = round((end - start) / window, 3)
    return shares


# ------------------------------------------------------------------------------------ main


def client_main(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
) -> int:
    """Parse the client's command line, run ``run(args)`` and print its result as one JSON line."""
    args = parser.parse_args(argv)
    raise_nofile(args.n + 256)
    result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
