"""Fan-out benchmark: our SignalR hub against a plain Channels consumer, one daphne, both layers.

    .venv/bin/python bench/fanout.py                 # full run (~10 min on 2 cores)
    .venv/bin/python bench/fanout.py --quick         # smoke run, N=20 M=10, one repetition
    .venv/bin/python bench/fanout.py --cases 100x100 --layers redis --impls hub,plain --reps 5

For each layer (in-memory, Redis) one daphne subprocess serves ``bench.asgi`` on a free loopback
port: ``/bench/hub`` (``BenchHub``, a ``hubs.hub.Hub``) and ``/bench/plain`` (a plain
``AsyncWebsocketConsumer``; ``/bench/plain-nodb`` is the same without Channels' per-message
``close_old_connections`` hop). For each case NxM and repetition, and each side in rotating
order, a separate client process (``bench/client.py``) connects N receivers, joins them to a
fresh group, asks the server to broadcast M messages to it, and reports deliveries/s, latency
percentiles and lost deliveries. Between runs the driver waits until the server has no open
socket and flushes the layer; a server that does not settle is restarted. Medians of the
repetitions are printed, with the ratio hub/plain, and everything is written as JSON to
``bench/results/fanout-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
IMPLS = ("hub", "plain", "plain-nodb")
LAYERS = ("memory", "redis")
DEFAULT_CASES = "100x100,1000x10"
DEFAULT_IMPLS = "hub,plain,plain-nodb"
COMPLETED = ("ok", "lost")  # runs whose figures count (a timeout or failure gives no rate)


@dataclass
class Server:
    """One daphne subprocess serving ``bench.asgi`` with one channel layer."""

    layer: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    restarts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Options:
    """The parsed command line."""

    cases: list[tuple[int, int]]
    layers: list[str]
    impls: list[str]
    reps: int
    timeout: float
    idle: float
    redis_url: str
    settle_timeout: float
    connect_timeout: float
    out: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ plumbing


def free_port() -> int:
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
    """Raise the soft open-file limit to ``needed`` (inherited by daphne and the clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def redis_ready(url: str) -> bool:
    """Ping Redis; if it is the local default and not running, start it (as the README says)."""
    import redis

    def ping() -> bool:
        try:
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    if ping():
        return True
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or (parts.port or 6379) != 6379:
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


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ server


def start_server(layer: str, opts: Options, stamp: str) -> Server:
    env = dict(os.environ)
    env.update(DJANGO_SETTINGS_MODULE="bench.settings", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("REDIS_URL", None)
    if layer == "redis":
        env["REDIS_URL"] = opts.redis_url
    port = free_port()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / f"daphne-{stamp}-{layer}.log"
    with open(log_path, "ab") as log_file:
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
        command.append("bench.asgi:application")
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(layer=layer, port=port, proc=proc, log_path=log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne ({layer}) exited with {proc.returncode}; see {log_path}")
        status, body = http_json(server.base + "/bench/stats", timeout=2)
        if status == 200:
            expected = "RedisChannelLayer" if layer == "redis" else "InMemoryChannelLayer"
            backend = body.get("layer", {}).get("backend")
            if backend != expected:
                stop_server(server)
                raise RuntimeError(f"daphne ({layer}) runs {backend}, expected {expected}")
            return server
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"daphne ({layer}) did not answer within 30 s; see {log_path}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


def settle(server: Server, timeout: float) -> bool:
    """Wait until no socket is open on the server, then flush its layer."""
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


def ensure_settled(server: Server, opts: Options, stamp: str) -> Server:
    """The server, clean; restarted when it did not settle in time (or died)."""
    if settle(server, opts.settle_timeout):
        return server
    log(f"  daphne ({server.layer}) did not settle within {opts.settle_timeout:.0f} s: restarting it")
    stop_server(server)
    fresh = start_server(server.layer, opts, stamp)
    fresh.restarts = server.restarts + 1
    return fresh


# ------------------------------------------------------------------------------------ runs


def run_client(server: Server, impl: str, n: int, m: int, opts: Options) -> dict[str, Any]:
    close_timeout = 20.0
    command = [
        sys.executable, "-m", "bench.client",
        "--url", f"ws://127.0.0.1:{server.port}",
        "--impl", impl, "--n", str(n), "--m", str(m),
        "--group", f"fanout-{uuid.uuid4().hex[:12]}",
        "--server-pid", str(server.proc.pid),
        "--timeout", str(opts.timeout), "--idle", str(opts.idle),
        "--connect-timeout", str(opts.connect_timeout), "--close-timeout", str(close_timeout),
    ]  # fmt: skip
    hard_limit = opts.connect_timeout + opts.timeout + opts.idle + close_timeout + 30
    base: dict[str, Any] = {"impl": impl, "n": n, "m": m, "expected": n * m}
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
    return json.loads(lines[-1])


def describe(result: dict[str, Any]) -> str:
    if result.get("status") in COMPLETED:
        return (
            f"{result['status']:>7}  {result.get('deliveries_per_s') or 0:>9,.0f}/s  "
            f"p50 {result.get('p50_ms') or 0:>8.1f} ms  p99 {result.get('p99_ms') or 0:>8.1f} ms  "
            f"lost {result.get('lost')}"
        )
    received = f"{result.get('received', 0)}/{result['expected']}"
    return f"{result.get('status'):>7}  received {received}  {result.get('error', '')}"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
    rows = []
    for layer in opts.layers:
        for n, m in opts.cases:
            for impl in opts.impls:
                mine = [r for r in runs if (r["layer"], r["n"], r["m"], r["impl"]) == (layer, n, m, impl)]
                if not mine:
                    continue
                done = [r for r in mine if r.get("status") in COMPLETED]
                statuses: dict[str, int] = {}
                for r in mine:
                    statuses[r.get("status", "?")] = statuses.get(r.get("status", "?"), 0) + 1

                def pick(key: str, runs_: list[dict[str, Any]] = done) -> float | None:
                    return median([float(r[key]) for r in runs_ if r.get(key) is not None])

                rows.append(
                    {
                        "layer": layer,
                        "n": n,
                        "m": m,
                        "impl": impl,
                        "runs": len(mine),
                        "statuses": statuses,
                        "deliveries_per_s": pick("deliveries_per_s"),
                        "p50_ms": pick("p50_ms"),
                        "p99_ms": pick("p99_ms"),
                        "lost": pick("lost"),
                        "lost_total": sum(int(r.get("lost", 0)) for r in done),
                        "server_cpu_share": pick("server_cpu_share"),
                        "send_s": pick("send_s"),
                    }
                )
    by_key = {(r["layer"], r["n"], r["m"], r["impl"]): r for r in rows}
    for row in rows:
        hub = by_key.get((row["layer"], row["n"], row["m"], "hub"))
        if row["impl"] == "hub" or hub is None:
            continue
        if hub["deliveries_per_s"] and row["deliveries_per_s"]:
            row["hub_ratio"] = round(hub["deliveries_per_s"] / row["deliveries_per_s"], 2)
    return rows


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(rows: list[dict[str, Any]], opts: Options) -> None:
    print()
    print(
        f"Fan-out to one group: medians of {opts.reps} run(s); deliveries/s = received / "
        "(last receipt - first send); latency = receipt - sender's time.time()"
    )
    header = (
        f"{'layer':<7} {'case':<13} {'side':<11} {'deliv/s':>9} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'lost':>6} {'srv cpu':>7} {'hub/this':>8}  runs"
    )
    print(header)
    print("-" * len(header))
    last = None
    for row in rows:
        key = (row["layer"], row["n"], row["m"])
        if last is not None and key[:1] != last[:1]:
            print()
        case = f"N={row['n']} M={row['m']}"
        runs = ", ".join(f"{count} {status}" for status, count in sorted(row["statuses"].items()))
        print(
            f"{row['layer'] if key != last else '':<7} {case if key != last else '':<13} {row['impl']:<11} "
            f"{_num(row['deliveries_per_s'], ',.0f'):>9} {_num(row['p50_ms'], '.1f'):>9} "
            f"{_num(row['p99_ms'], '.1f'):>9} {_num(row['lost'], '.0f'):>6} "
            f"{_num(row['server_cpu_share'], '.0%'):>7} {_num(row.get('hub_ratio'), '.2f'):>8}  {runs}"
        )
        last = key
    print()
    print("hub/this: the hub's median deliveries/s divided by this side's (>1: the hub is faster).")
    print("lost: median over completed runs of N*M minus deliveries received; srv cpu: daphne's CPU")
    print("share of one core while the broadcast ran. A 'timeout' run gave no figures.")


# ------------------------------------------------------------------------------------ main


def parse_cases(text: str) -> list[tuple[int, int]]:
    cases = []
    for item in text.split(","):
        n, sep, m = item.strip().lower().partition("x")
        if not sep or not n.isdigit() or not m.isdigit() or int(n) < 1 or int(m) < 1:
            raise argparse.ArgumentTypeError(f"a case is NxM, e.g. 100x100 (got {item!r})")
        cases.append((int(n), int(m)))
    return cases


def parse_choices(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {text!r})")
        return values

    return parse


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N=20 M=10, one repetition")
    parser.add_argument("--cases", type=parse_cases, default=None, help=f"NxM list (default {DEFAULT_CASES})")
    parser.add_argument("--layers", type=parse_choices(LAYERS), default=list(LAYERS), help="memory,redis")
    parser.add_argument(
        "--impls", type=parse_choices(IMPLS), default=None, help=f"sides to run (default {DEFAULT_IMPLS})"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions per case (default 3)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per run from trigger (default 60)"
    )
    parser.add_argument("--idle", type=float, default=5.0, help="quiet seconds after the sends = lost")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="used by the redis layer")
    parser.add_argument("--settle-timeout", type=float, default=60.0, help="wait for the server to go idle")
    parser.add_argument("--connect-timeout", type=float, default=90.0, help="connect and join N receivers")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/…)")
    args = parser.parse_args(argv)
    impls = args.impls or DEFAULT_IMPLS.split(",")
    return Options(
        cases=args.cases or parse_cases("20x10" if args.quick else DEFAULT_CASES),
        layers=args.layers,
        impls=impls,
        reps=max(1, args.reps if args.reps is not None else (1 if args.quick else 3)),
        timeout=args.timeout if args.timeout is not None else (15.0 if args.quick else 60.0),
        idle=min(args.idle, 2.0) if args.quick else args.idle,
        redis_url=args.redis_url,
        settle_timeout=args.settle_timeout,
        connect_timeout=min(args.connect_timeout, 20.0) if args.quick else args.connect_timeout,
        out=args.out,
        extra={"quick": args.quick},
    )


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("daphne", "channels", "channels-redis", "redis", "Django", "aiohttp", "Twisted"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    max_n = max(n for n, _ in opts.cases)
    nofile = raise_nofile(2 * max_n + 1024)
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    layers = list(opts.layers)
    if "redis" in layers and not redis_ready(opts.redis_url):
        notes.append(f"redis layer skipped: no Redis at {opts.redis_url}")
        log(notes[-1])
        layers.remove("redis")
    restarts: dict[str, int] = {}
    for layer in layers:
        log(f"== layer {layer}: starting daphne")
        server: Server | None = None
        try:
            server = start_server(layer, opts, stamp)
            for n, m in opts.cases:
                for rep in range(opts.reps):
                    shift = rep % len(opts.impls)
                    for impl in opts.impls[shift:] + opts.impls[:shift]:
                        server = ensure_settled(server, opts, stamp)
                        t0 = time.monotonic()
                        result = run_client(server, impl, n, m, opts)
                        result.update(layer=layer, rep=rep + 1, wall_s=round(time.monotonic() - t0, 2))
                        runs.append(result)
                        log(f"  {layer:<6} N={n:<5} M={m:<4} rep {rep + 1} {impl:<10} {describe(result)}")
            settle(server, opts.settle_timeout)  # leave Redis without bench keys
        except RuntimeError as exc:
            notes.append(f"layer {layer} stopped early: {exc}")
            log(notes[-1])
        finally:
            if server is not None:
                restarts[layer] = server.restarts
                stop_server(server)

    rows = summarize(runs, opts)
    print_table(rows, opts)
    elapsed = time.monotonic() - started
    out = opts.out or RESULTS / f"fanout-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "meta": {
            "started_utc": stamp,
            "elapsed_s": round(elapsed, 1),
            "cases": [f"{n}x{m}" for n, m in opts.cases],
            "layers": layers,
            "impls": opts.impls,
            "reps": opts.reps,
            "timeout_s": opts.timeout,
            "idle_s": opts.idle,
            "redis_url": opts.redis_url if "redis" in layers else None,
            "cpus": os.cpu_count(),
            "nofile": list(nofile),
            "daphne_restarts": restarts,
            "versions": versions(),
            "notes": notes,
            **opts.extra,
        },
        "summary": rows,
        "runs": runs,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{len(runs)} runs in {elapsed:.0f} s; results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
