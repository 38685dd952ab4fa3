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

import contextlib
import functools
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.common import Server, num  # noqa: E402

SIDES = ("hub", "hub-ack", "hub-ack-batch", "sio-ack", "sio")
DEFAULT_SIDES = "hub,hub-ack,hub-ack-batch,sio-ack"
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
#: Packages whose versions the report lists besides ``bench.common.BASE_VERSIONS``.
VERSIONS = ("python-socketio", "python-engineio", "uvicorn", "psycopg")


@dataclass(kw_only=True)
class Options(common.RunOptions):
    """The parsed command line."""

    clients: int
    messages: int
    runs: int
    sides: list[str]
    ack_timeout: float
    ack_window: float
    layer: str
    database_url: str | None
    keep_db: bool
    sio_server: str
    sio_fanout: str


# ------------------------------------------------------------------------------------ servers


def hub_env(opts: Options, database_url: str) -> dict[str, str]:
    """The hub daphne's environment: the bench settings, its database, key prefix and retry runner."""
    return common.django_env(
        opts.redis_url if opts.layer == "redis" else None,
        isolated=True,
        DATABASE_URL=database_url,
        CONDUIT_RT_KEY_PREFIX=KEY_PREFIX,
        CONDUIT_RT_RETRY_RUNNER="embedded",
    )


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
        common.log(f"could not delete the bench rows: {(done.stderr or '').strip().splitlines()[-1:]}")


def migrate(env: dict[str, str]) -> None:
    """Apply the migrations to the database the bench daphne will use."""
    done = manage(env, "migrate", "--noinput", "-v", "0")
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"migrate failed: {tail}")


def start_server(kind: str, opts: Options, env: dict[str, str], stamp: str) -> Server:
    """The ``hub`` server (daphne, ``bench.asgi``) or the ``sio`` one (``bench.socketio_app``)."""
    port = common.free_port()
    if kind == "hub":
        command = common.daphne_command(port, "bench.asgi:application")
    elif opts.sio_server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--log-level", "warning", "--no-access-log", "bench.socketio_app:application"]
    else:
        command = common.daphne_command(port, "bench.socketio_app:application")
    log_path = common.RESULTS / f"acked-{stamp}-{kind}.log"
    return common.launch_server(kind, f"{kind} server", port, command, env, log_path)


# ------------------------------------------------------------------------------------ runs


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
        "--ack-window", str(opts.ack_window),
        "--connect-timeout", str(opts.connect_timeout), "--step-timeout", str(step_timeout),
        "--close-timeout", str(close_timeout),
    ]  # fmt: skip
    hard_limit = opts.connect_timeout + opts.timeout + opts.ack_timeout + 4 * step_timeout
    hard_limit += close_timeout + 30
    base: dict[str, Any] = {
        "side": side, "n": opts.clients, "m": opts.messages, "expected": opts.clients * opts.messages
    }  # fmt: skip
    return common.run_client_process(command, base, hard_limit)


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


def summarize(runs: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
    rows = []
    for side in opts.sides:
        mine = [r for r in runs if r["side"] == side]
        if not mine:
            continue
        done = [r for r in mine if r.get("status") in COMPLETED]
        pick = functools.partial(common.median_of, done)
        total = functools.partial(common.total_of, done)
        rows.append(
            {
                "side": side,
                "n": opts.clients,
                "m": opts.messages,
                "runs": len(mine),
                "statuses": common.count_statuses(mine),
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
        runs = common.format_statuses(row["statuses"])
        print(
            f"{row['side']:<8} {num(row['deliveries_per_s'], ',.0f'):>8} {num(row['p50_ms'], '.1f'):>8} "
            f"{num(row['p99_ms'], '.1f'):>8} {num(row['acked_per_s'], ',.0f'):>8} "
            f"{num(row['ack_p50_ms'], '.1f'):>8} {num(row['ack_p99_ms'], '.1f'):>8} "
            f"{num(row['lost_total'], 'd'):>5} {num(row['duplicates_total'], 'd'):>4} "
            f"{num(row['retries_total'], 'd'):>5} {num(row['acks_missing_total'], 'd'):>7} "
            f"{num(row['pending_left_max'], 'd'):>4} {num(row['server_cpu_share'], '.0%'):>7} "
            f"{num(row['other_cpu_share'], '.0%'):>5}  {runs}"
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
        print(f"{label:<32} {num(value, '.2f'):>5}   target >= {TARGETS[key]:.1f}: {verdict}")
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


def parse_args(argv: list[str] | None) -> Options:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: N=20 M=20, one run")
    parser.add_argument("--clients", type=int, default=None, help="N receivers (default 100)")
    parser.add_argument("--messages", type=int, default=None, help="M messages per run (default 200)")
    parser.add_argument("--runs", type=int, default=None, help="repetitions of each side (default 3)")
    parser.add_argument(
        "--sides", type=common.parse_choices(SIDES), default=None, help=f"default {DEFAULT_SIDES}"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run from the trigger")
    parser.add_argument("--idle", type=float, default=5.0, help="quiet seconds = lost / unacked")
    parser.add_argument("--ack-timeout", type=float, default=60.0, help="seconds to wait for every ack")
    parser.add_argument(
        "--ack-window",
        type=float,
        default=0.1,
        help="hub-ack-batch: seconds a client gathers ids per AcknowledgeMessages (default 0.1, as the "
        "e2e acking clients; 0: next loop turn)",
    )
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
        ack_timeout=args.ack_timeout,
        ack_window=args.ack_window,
        layer=args.layer,
        database_url=args.database_url,
        keep_db=args.keep_db,
        sio_server=args.sio_server,
        sio_fanout=args.sio_fanout,
        **common.run_options(args, quick_idle=3.0, quick_connect_timeout=30.0),
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    common.exit_on_sigterm()
    stamp = common.utc_stamp()
    nofile = common.raise_nofile(2 * opts.clients + 1024)
    started = time.monotonic()
    notes: list[str] = []
    runs: list[dict[str, Any]] = []
    if opts.layer == "redis" and not common.redis_ready(opts.redis_url):
        common.log(f"No Redis at {opts.redis_url}: use --layer memory, or start Redis (see bench/README.md).")
        return 2
    sqlite_path: Path | None = None
    database_url = opts.database_url
    if database_url is None:
        common.RESULTS.mkdir(parents=True, exist_ok=True)
        sqlite_path = common.RESULTS / f"acked-{stamp}.sqlite3"
        database_url = f"sqlite:///{sqlite_path}"
    env = hub_env(opts, database_url)
    servers: dict[str, Server] = {}
    restarts: dict[str, int] = {}

    def start(kind: str) -> Server:
        return start_server(kind, opts, env if kind == "hub" else sio_env(opts.sio_fanout), stamp)

    try:
        redis = common.redis_pid(opts.redis_url) if opts.layer == "redis" else None
        if opts.layer == "redis":
            common.forget_redis_keys(opts.redis_url, KEY_PREFIX)
        hub_sides = [s for s in opts.sides if s.startswith("hub")]
        if hub_sides:
            common.log(f"== migrating the hub's database ({database_url})")
            migrate(env)
            common.log("== starting the hub server (daphne, bench.asgi)")
            servers["hub"] = start("hub")
        if any(s.startswith("sio") for s in opts.sides):
            common.log(f"== starting the python-socketio server ({opts.sio_server}, bench.socketio_app)")
            servers["sio"] = start("sio")
        for rep in range(opts.runs):
            for side in common.rotated(opts.sides, rep):
                kind = "hub" if side.startswith("hub") else "sio"
                servers[kind] = server = common.ensure_settled(servers[kind], opts.settle_timeout, start)
                t0 = time.monotonic()
                result = run_client(server, side, opts, redis)
                result.update(rep=rep + 1, wall_s=round(time.monotonic() - t0, 2))
                runs.append(result)
                common.log(f"  rep {rep + 1} {side:<8} {describe(result)}")
        for server in servers.values():
            common.settle(server, opts.settle_timeout)
    except RuntimeError as exc:
        notes.append(f"stopped early: {exc}")
        common.log(notes[-1])
    finally:
        for kind, server in servers.items():
            restarts[kind] = server.restarts
            common.stop_server(server)
        if opts.layer == "redis":
            common.forget_redis_keys(opts.redis_url, KEY_PREFIX)
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
    out = opts.out or common.RESULTS / f"acked-{stamp}.json"
    meta = {
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
        "versions": common.versions(VERSIONS),
        "targets": TARGETS,
        "notes": notes,
        **opts.extra,
    }
    common.write_report(out, meta, rows, runs, elapsed, ratios=found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
