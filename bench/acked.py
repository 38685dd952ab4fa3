"""Acknowledged delivery: our hub's ``ack=True`` sends against its fire-and-forget sends and against
python-socketio's emit-with-ack, N clients, one run.

    .venv/bin/python bench/acked.py                  # N=100 M=200, 3 runs of each side (~2 min)
    .venv/bin/python bench/acked.py --quick          # smoke run: N=20 M=20, one run
    .venv/bin/python bench/acked.py --clients 200 --messages 100 --runs 5

Two server processes, both on free loopback ports, started once and stopped at the end (also on
error or Ctrl-C):

- daphne serving ``bench.asgi`` (``/bench/acked-hub`` = ``bench.bench_hub.AckBenchHub``) with the
  Redis channel layer and Conduit RT's Redis stores (history, members, pending acks) under their own
  key prefix (``bench-acked``), the embedded retry runner, the default ack timeout, and a database
  of its own (a fresh SQLite file in ``bench/results`` unless ``--database-url``), migrated first;
- daphne (or uvicorn, ``--sio-server``) serving ``bench.socketio_app`` (python-socketio
  ``AsyncServer``, in-process manager: no Redis).

The sides, each run in a separate client process (``bench/acked_client.py``) that connects N
receivers to one fresh group/room plus one trigger connection:

- ``hub``: ``asend("Tick", ..., ack=False)`` x M; deliveries/s = NxM / (last receipt - first send);
- ``hub-ack``: ``asend(..., ack=True)`` x M, every receiver acks every message on receipt with a
  non-blocking ``AcknowledgeMessage`` invocation; acked msgs/s = acks cleared / (time the server
  had processed the last ack - first send), ack latency = server time once an ack was processed
  - server send time of that message;
- ``sio-ack``: per message, ``emit("tick", data, to=sid, callback=...)`` to each member (the
  supported way to get per-client acks), awaited together (``--sio-fanout loop``: one by one); the
  client acks at once; acked msgs/s and ack latency as above, with the callback's time as "ack
  processed";
- ``sio`` (not run by default): ``emit("tick", data, room=room)``, fire-and-forget.

Sides rotate between repetitions; medians are printed with two ratios (hub-ack / hub and
hub-ack / sio-ack); everything goes to ``bench/results/acked-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.fanout import free_port, http_json, log, raise_nofile, redis_ready  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SIDES = ("hub", "hub-ack", "hub-ack-batch", "sio-ack", "sio")
DEFAULT_SIDES = "hub,hub-ack,sio-ack"
ACK_SIDES = ("hub-ack", "hub-ack-batch", "sio-ack")
#: Runs whose figures count; ``lost`` / ``unacked`` runs count but show their losses.
COMPLETED = ("ok", "lost", "unacked")
#: Conduit RT's own Redis keys (history, members, pending, cache) for the bench, apart from the rest.
KEY_PREFIX = "bench-acked"
#: ``AckBenchHub.hub_name``: the ``hub`` of the rows its acknowledged sends write.
HUB_NAME = "bench-acked"
TARGETS = {"acked_vs_ff": 0.5, "acked_vs_sio": 1.0, "batch_vs_ff": 0.5, "batch_vs_sio": 1.0}
#: Other processes' CPU (in cores) during a run above which the table warns.
NOISY = 0.15


@dataclass
class Server:
    """One server subprocess (``kind``: ``hub`` or ``sio``)."""

    kind: str
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

    clients: int
    messages: int
    runs: int
    sides: list[str]
    timeout: float
    idle: float
    ack_timeout: float
    redis_url: str
    layer: str
    database_url: str | None
    keep_db: bool
    sio_server: str
    sio_fanout: str
    settle_timeout: float
    connect_timeout: float
    out: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ servers


def hub_env(opts: Options, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in [k for k in env if k.startswith("CONDUIT_RT_")]:
        del env[name]  # only the settings below: a stray override would change what is measured
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        DATABASE_URL=database_url,
        CONDUIT_RT_KEY_PREFIX=KEY_PREFIX,
        CONDUIT_RT_RETRY_RUNNER="embedded",
    )
    env.pop("REDIS_URL", None)
    if opts.layer == "redis":
        env["REDIS_URL"] = opts.redis_url
    return env


def sio_env(fanout: str) -> dict[str, str]:
    """The environment of the python-socketio server (no Django, no Conduit RT settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_RT_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", BENCH_SIO_FANOUT=fanout)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def forget_rows(env: dict[str, str]) -> None:
    """Delete the bench hub's acknowledged messages and dead letters from a database that stays."""
    code = (
        "from hubs.models import AckedMessage, DeadLetter; "
        f"AckedMessage.objects.filter(hub={HUB_NAME!r}).delete(); "
        f"DeadLetter.objects.filter(hub={HUB_NAME!r}).delete()"
    )
    done = manage(env, "shell", "-c", code, timeout=120)
    if done.returncode != 0:
        log(f"could not delete the bench rows: {(done.stderr or '').strip().splitlines()[-1:]}")


def migrate(env: dict[str, str]) -> None:
    """Apply the migrations to the database the bench daphne will use."""
    done = manage(env, "migrate", "--noinput", "-v", "0")
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"migrate failed: {tail}")


def start_server(kind: str, opts: Options, env: dict[str, str], stamp: str) -> Server:
    port = free_port()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / f"acked-{stamp}-{kind}.log"
    if kind == "hub":
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
        command.append("bench.asgi:application")
    elif opts.sio_server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--log-level", "warning", "--no-access-log", "bench.socketio_app:application"]
    else:
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
        command.append("bench.socketio_app:application")
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(kind=kind, port=port, proc=proc, log_path=log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}; see {log_path}")
        status, _ = http_json(server.base + "/bench/stats", timeout=2)
        if status == 200:
            return server
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"{kind} server did not answer within 30 s; see {log_path}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


def settle(server: Server, timeout: float) -> bool:
    """Wait until no socket is open on the server, then reset it (flush the layer / forget acks)."""
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


def forget_redis_keys(url: str) -> int:
    """Delete the bench's own Conduit RT keys (``bench-acked:*``) from the bench Redis database."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{KEY_PREFIX}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    except redis.RedisError:
        return 0
    finally:
        client.close()


# ------------------------------------------------------------------------------------ runs


def redis_pid(url: str) -> int | None:
    """The pid of the Redis server at ``url`` when it runs on this machine (for its CPU share)."""
    import redis

    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        return None
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        pid = int(client.info("server").get("process_id", 0))
    except (redis.RedisError, ValueError):
        return None
    finally:
        client.close()
    return pid if pid and Path(f"/proc/{pid}").exists() else None


def run_client(server: Server, side: str, opts: Options, redis: int | None) -> dict[str, Any]:
    close_timeout = 20.0
    step_timeout = 30.0
    command = [
        sys.executable, "-m", "bench.acked_client",
        "--url", f"ws://127.0.0.1:{server.port}",
        "--side", side, "--n", str(opts.clients), "--m", str(opts.messages),
        "--group", f"acked-{uuid.uuid4().hex[:12]}",
        "--server-pid", str(server.proc.pid), *(["--redis-pid", str(redis)] if redis else []),
        "--timeout", str(opts.timeout), "--idle", str(opts.idle), "--ack-timeout", str(opts.ack_timeout),
        "--connect-timeout", str(opts.connect_timeout), "--step-timeout", str(step_timeout),
        "--close-timeout", str(close_timeout),
    ]  # fmt: skip
    hard_limit = opts.connect_timeout + opts.timeout + opts.ack_timeout + 4 * step_timeout
    hard_limit += close_timeout + 30
    base: dict[str, Any] = {
        "side": side, "n": opts.clients, "m": opts.messages, "expected": opts.clients * opts.messages
    }  # fmt: skip
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


def describe(result: dict[str, Any]) -> str:
    if result.get("status") in COMPLETED:
        text = (
            f"{result['status']:>7}  deliv {result.get('deliveries_per_s') or 0:>8,.0f}/s  "
            f"p99 {result.get('p99_ms') or 0:>7.1f} ms  lost {result.get('lost')}"
        )
        if result["side"] in ACK_SIDES:
            text += (
                f"  acked {result.get('acked_per_s') or 0:>7,.0f}/s  ack p99 "
                f"{result.get('ack_p99_ms') or 0:>7.1f} ms  unacked {result.get('acks_missing')}"
                f"  retries {result.get('retries')}"
            )
        return text
    return f"{result.get('status'):>7}  received {result.get('received', 0)}/{result['expected']}  " + str(
        result.get("error", "")
    )


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
    rows = []
    for side in opts.sides:
        mine = [r for r in runs if r["side"] == side]
        if not mine:
            continue
        done = [r for r in mine if r.get("status") in COMPLETED]
        statuses: dict[str, int] = {}
        for r in mine:
            statuses[r.get("status", "?")] = statuses.get(r.get("status", "?"), 0) + 1

        def pick(key: str, runs_: list[dict[str, Any]] = done) -> float | None:
            return median([float(r[key]) for r in runs_ if r.get(key) is not None])

        def total(key: str, runs_: list[dict[str, Any]] = done) -> int | None:
            values = [int(r[key]) for r in runs_ if r.get(key) is not None]
            return sum(values) if values else None

        rows.append(
            {
                "side": side,
                "n": opts.clients,
                "m": opts.messages,
                "runs": len(mine),
                "statuses": statuses,
                "deliveries_per_s": pick("deliveries_per_s"),
                "p50_ms": pick("p50_ms"),
                "p99_ms": pick("p99_ms"),
                "acked_per_s": pick("acked_per_s"),
                "ack_p50_ms": pick("ack_p50_ms"),
                "ack_p99_ms": pick("ack_p99_ms"),
                "server_cpu_share": pick("server_cpu_share"),
                "client_cpu_share": pick("client_cpu_share"),
                "redis_cpu_share": pick("redis_cpu_share"),
                "other_cpu_share": pick("other_cpu_share"),
                "other_cpu_max": max(
                    (float(r["other_cpu_share"]) for r in done if r.get("other_cpu_share") is not None),
                    default=None,
                ),
                "send_s": pick("send_s"),
                "lost_total": total("lost"),
                "duplicates_total": total("duplicates"),
                "retries_total": total("retries"),
                "acks_missing_total": total("acks_missing"),
                "acks_unknown_total": total("acks_unknown"),
                "pending_left_max": max(
                    (int(r["pending_left"]) for r in done if r.get("pending_left") is not None), default=None
                ),
            }
        )
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    by_side = {r["side"]: r for r in rows}

    def ratio(num: tuple[str, str], den: tuple[str, str]) -> float | None:
        a = by_side.get(num[0], {}).get(num[1])
        b = by_side.get(den[0], {}).get(den[1])
        return round(a / b, 2) if a and b else None

    return {
        "acked_vs_ff": ratio(("hub-ack", "acked_per_s"), ("hub", "deliveries_per_s")),
        "acked_vs_sio": ratio(("hub-ack", "acked_per_s"), ("sio-ack", "acked_per_s")),
        "batch_vs_ff": ratio(("hub-ack-batch", "acked_per_s"), ("hub", "deliveries_per_s")),
        "batch_vs_sio": ratio(("hub-ack-batch", "acked_per_s"), ("sio-ack", "acked_per_s")),
    }


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(rows: list[dict[str, Any]], found: dict[str, float | None], opts: Options) -> None:
    print()
    print(
        f"Acknowledged delivery, N={opts.clients} clients x M={opts.messages} messages, one group: "
        f"medians of {opts.runs} run(s)"
    )
    header = (
        f"{'side':<8} {'deliv/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'acked/s':>8} {'ack p50':>8} "
        f"{'ack p99':>8} {'lost':>5} {'dup':>4} {'retry':>5} {'unacked':>7} {'pend':>4} {'srv cpu':>7} "
        f"{'other':>5}  runs"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        runs = ", ".join(f"{count} {status}" for status, count in sorted(row["statuses"].items()))
        print(
            f"{row['side']:<8} {_num(row['deliveries_per_s'], ',.0f'):>8} {_num(row['p50_ms'], '.1f'):>8} "
            f"{_num(row['p99_ms'], '.1f'):>8} {_num(row['acked_per_s'], ',.0f'):>8} "
            f"{_num(row['ack_p50_ms'], '.1f'):>8} {_num(row['ack_p99_ms'], '.1f'):>8} "
            f"{_num(row['lost_total'], 'd'):>5} {_num(row['duplicates_total'], 'd'):>4} "
            f"{_num(row['retries_total'], 'd'):>5} {_num(row['acks_missing_total'], 'd'):>7} "
            f"{_num(row['pending_left_max'], 'd'):>4} {_num(row['server_cpu_share'], '.0%'):>7} "
            f"{_num(row['other_cpu_share'], '.0%'):>5}  {runs}"
        )
    print()
    labels = {
        "acked_vs_ff": "hub-ack acked/s / hub deliv/s",
        "acked_vs_sio": "hub-ack / sio-ack acked/s",
        "batch_vs_ff": "hub-ack-batch / hub deliv/s",
        "batch_vs_sio": "hub-ack-batch / sio-ack acked/s",
    }
    for key, label in labels.items():
        value = found.get(key)
        verdict = "-" if value is None else ("meets" if value >= TARGETS[key] else "below")
        print(f"{label:<32} {_num(value, '.2f'):>5}   target >= {TARGETS[key]:.1f}: {verdict}")
    print()
    print("deliv/s: distinct deliveries / (last receipt - first send); p50/p99: receipt - send (client).")
    print("acked/s: acks cleared by the server / (server time of the last processed ack - first send);")
    print("ack p50/p99: server ack processed - server send, per (client, message). lost, dup, retry")
    print("(receipts with retryCount > 0), unacked (N*M - acks cleared): totals over the runs; pend: pending")
    print("entries left after the run (max); srv cpu: server process CPU share of one core during the run;")
    print("other: CPU share of one core used by other processes (not the server, its client, or Redis).")
    noisy = [r["side"] for r in rows if (r.get("other_cpu_max") or 0.0) > NOISY]
    if noisy:
        print(f"WARNING: other processes used over {NOISY:.0%} of a core during runs of {', '.join(noisy)}:")
        print("the figures are disturbed by a neighbour; rerun on a quiet machine.")


# ------------------------------------------------------------------------------------ main


def parse_sides(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in SIDES]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SIDES)} (got {text!r})")
    return values


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N=20 M=20, one run")
    parser.add_argument("--clients", type=int, default=None, help="N receivers (default 100)")
    parser.add_argument("--messages", type=int, default=None, help="M messages per run (default 200)")
    parser.add_argument("--runs", type=int, default=None, help="repetitions of each side (default 3)")
    parser.add_argument("--sides", type=parse_sides, default=None, help=f"default {DEFAULT_SIDES}")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run from the trigger")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet seconds = lost / unacked")
    parser.add_argument("--ack-timeout", type=float, default=60.0, help="seconds to wait for every ack")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument(
        "--layer", choices=("redis", "memory"), default="redis",
        help="hub: Redis layer and stores (default) or in-memory (one process)",
    )  # fmt: skip
    parser.add_argument(
        "--database-url", default=None,
        help="the hub's database (default: a fresh SQLite file in bench/results, removed afterwards)",
    )  # fmt: skip
    parser.add_argument("--keep-db", action="store_true", help="keep the SQLite file")
    parser.add_argument("--sio-server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument(
        "--sio-fanout", choices=("gather", "loop"), default="gather",
        help="sio-ack: await one message's per-client emits together (default) or one by one",
    )  # fmt: skip
    parser.add_argument("--settle-timeout", type=float, default=60.0)
    parser.add_argument("--connect-timeout", type=float, default=90.0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/…)")
    args = parser.parse_args(argv)
    for name in ("clients", "messages", "runs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    return Options(
        clients=args.clients or (20 if args.quick else 100),
        messages=args.messages or (20 if args.quick else 200),
        runs=args.runs or (1 if args.quick else 3),
        sides=args.sides or DEFAULT_SIDES.split(","),
        timeout=args.timeout,
        idle=min(args.idle, 3.0) if args.quick else args.idle,
        ack_timeout=args.ack_timeout,
        redis_url=args.redis_url,
        layer=args.layer,
        database_url=args.database_url,
        keep_db=args.keep_db,
        sio_server=args.sio_server,
        sio_fanout=args.sio_fanout,
        settle_timeout=args.settle_timeout,
        connect_timeout=min(args.connect_timeout, 30.0) if args.quick else args.connect_timeout,
        out=args.out,
        extra={"quick": args.quick},
    )


def versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    names = ("daphne", "channels", "channels-redis", "redis", "Django", "aiohttp", "Twisted",
             "python-socketio", "python-engineio", "uvicorn", "psycopg")  # fmt: skip
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    nofile = raise_nofile(2 * opts.clients + 1024)
    started = time.monotonic()
    notes: list[str] = []
    runs: list[dict[str, Any]] = []
    if opts.layer == "redis" and not redis_ready(opts.redis_url):
        log(f"No Redis at {opts.redis_url}: use --layer memory, or start Redis (see bench/README.md).")
        return 2
    sqlite_path: Path | None = None
    database_url = opts.database_url
    if database_url is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        sqlite_path = RESULTS / f"acked-{stamp}.sqlite3"
        database_url = f"sqlite:///{sqlite_path}"
    env = hub_env(opts, database_url)
    servers: dict[str, Server] = {}
    restarts: dict[str, int] = {}
    try:
        redis = redis_pid(opts.redis_url) if opts.layer == "redis" else None
        if opts.layer == "redis":
            forget_redis_keys(opts.redis_url)
        hub_sides = [s for s in opts.sides if s.startswith("hub")]
        if hub_sides:
            log(f"== migrating the hub's database ({database_url})")
            migrate(env)
            log("== starting the hub server (daphne, bench.asgi)")
            servers["hub"] = start_server("hub", opts, env, stamp)
        if any(s.startswith("sio") for s in opts.sides):
            log(f"== starting the python-socketio server ({opts.sio_server}, bench.socketio_app)")
            servers["sio"] = start_server("sio", opts, sio_env(opts.sio_fanout), stamp)
        for rep in range(opts.runs):
            shift = rep % len(opts.sides)
            for side in opts.sides[shift:] + opts.sides[:shift]:
                kind = "hub" if side.startswith("hub") else "sio"
                server = servers[kind]
                if not settle(server, opts.settle_timeout):
                    log(f"  {kind} server did not settle within {opts.settle_timeout:.0f} s: restarting it")
                    stop_server(server)
                    fresh = start_server(
                        kind, opts, env if kind == "hub" else sio_env(opts.sio_fanout), stamp
                    )
                    fresh.restarts = server.restarts + 1
                    servers[kind] = server = fresh
                t0 = time.monotonic()
                result = run_client(server, side, opts, redis)
                result.update(rep=rep + 1, wall_s=round(time.monotonic() - t0, 2))
                runs.append(result)
                log(f"  rep {rep + 1} {side:<8} {describe(result)}")
        for server in servers.values():
            settle(server, opts.settle_timeout)
    except RuntimeError as exc:
        notes.append(f"stopped early: {exc}")
        log(notes[-1])
    finally:
        for kind, server in servers.items():
            restarts[kind] = server.restarts
            stop_server(server)
        if opts.layer == "redis":
            forget_redis_keys(opts.redis_url)
        if sqlite_path is None and "hub" in servers:
            forget_rows(env)
        elif sqlite_path is not None and not opts.keep_db:
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(sqlite_path) + suffix).unlink()

    rows = summarize(runs, opts)
    found = ratios(rows)
    print_table(rows, found, opts)
    elapsed = time.monotonic() - started
    out = opts.out or RESULTS / f"acked-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "meta": {
            "started_utc": stamp,
            "elapsed_s": round(elapsed, 1),
            "clients": opts.clients,
            "messages": opts.messages,
            "runs": opts.runs,
            "sides": opts.sides,
            "layer": opts.layer,
            "redis_url": opts.redis_url if opts.layer == "redis" else None,
            "database": "sqlite (fresh file)" if sqlite_path is not None else database_url,
            "sio_server": opts.sio_server,
            "sio_fanout": opts.sio_fanout,
            "key_prefix": KEY_PREFIX,
            "timeout_s": opts.timeout,
            "idle_s": opts.idle,
            "ack_timeout_s": opts.ack_timeout,
            "cpus": os.cpu_count(),
            "nofile": list(nofile),
            "server_restarts": restarts,
            "versions": versions(),
            "targets": TARGETS,
            "notes": notes,
            **opts.extra,
        },
        "summary": rows,
        "ratios": found,
        "runs": runs,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{len(runs)} runs in {elapsed:.0f} s; results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
