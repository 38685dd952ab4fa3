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
import functools
import os
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

IMPLS = ("hub", "plain", "plain-nodb")
LAYERS = ("memory", "redis")
DEFAULT_CASES = "100x100,1000x10"
DEFAULT_IMPLS = "hub,plain,plain-nodb"
COMPLETED = ("ok", "lost")  # runs whose figures count (a timeout or failure gives no rate)


@dataclass(kw_only=True)
class Options(common.RunOptions):
    """The parsed command line."""

    cases: list[tuple[int, int]]
    layers: list[str]
    impls: list[str]
    reps: int


# ------------------------------------------------------------------------------------ server


def start_server(layer: str, opts: Options, stamp: str) -> Server:
    """One daphne serving ``bench.asgi`` with ``layer``; checks that it runs that layer's backend."""
    expected = "RedisChannelLayer" if layer == "redis" else "InMemoryChannelLayer"

    def check(stats: dict[str, Any]) -> str | None:
        backend = stats.get("layer", {}).get("backend")
        return None if backend == expected else f"daphne ({layer}) runs {backend}, expected {expected}"

    port = common.free_port()
    return common.launch_server(
        name=layer,
        label=f"daphne ({layer})",
        port=port,
        command=common.daphne_command(port, "bench.asgi:application"),
        env=common.django_env(opts.redis_url if layer == "redis" else None),
        log_path=common.RESULTS / f"daphne-{stamp}-{layer}.log",
        check=check,
    )


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
    return common.run_client_process(command, base, hard_limit)


def describe(result: dict[str, Any]) -> str:
    if result.get("status") in COMPLETED:
        return (
            f"{result['status']:>7}  {result.get('deliveries_per_s') or 0:>9,.0f}/s  "
            f"p50 {result.get('p50_ms') or 0:>8.1f} ms  p99 {result.get('p99_ms') or 0:>8.1f} ms  "
            f"lost {result.get('lost')}"
        )
    received = f"{result.get('received', 0)}/{result['expected']}"
    return f"{result.get('status'):>7}  received {received}  {result.get('error', '')}"


def summarize(runs: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
    rows = []
    for layer in opts.layers:
        for n, m in opts.cases:
            for impl in opts.impls:
                mine = [r for r in runs if (r["layer"], r["n"], r["m"], r["impl"]) == (layer, n, m, impl)]
                if not mine:
                    continue
                done = [r for r in mine if r.get("status") in COMPLETED]
                pick = functools.partial(common.median_of, done)
                rows.append(
                    {
                        "layer": layer,
                        "n": n,
                        "m": m,
                        "impl": impl,
                        "runs": len(mine),
                        "statuses": common.count_statuses(mine),
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
        runs = common.format_statuses(row["statuses"])
        print(
            f"{row['layer'] if key != last else '':<7} {case if key != last else '':<13} {row['impl']:<11} "
            f"{num(row['deliveries_per_s'], ',.0f'):>9} {num(row['p50_ms'], '.1f'):>9} "
            f"{num(row['p99_ms'], '.1f'):>9} {num(row['lost'], '.0f'):>6} "
            f"{num(row['server_cpu_share'], '.0%'):>7} {num(row.get('hub_ratio'), '.2f'):>8}  {runs}"
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


def parse_args(argv: list[str] | None) -> Options:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: N=20 M=10, one repetition")
    parser.add_argument("--cases", type=parse_cases, default=None, help=f"NxM list (default {DEFAULT_CASES})")
    parser.add_argument(
        "--layers", type=common.parse_choices(LAYERS), default=list(LAYERS), help="memory,redis"
    )
    parser.add_argument(
        "--impls",
        type=common.parse_choices(IMPLS),
        default=None,
        help=f"sides to run (default {DEFAULT_IMPLS})",
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
        **common.run_options(args, quick_idle=2.0, quick_connect_timeout=20.0),
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    stamp = common.utc_stamp()
    max_n = max(n for n, _ in opts.cases)
    nofile = common.raise_nofile(2 * max_n + 1024)
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    layers = list(opts.layers)
    if "redis" in layers and not common.redis_ready(opts.redis_url):
        notes.append(f"redis layer skipped: no Redis at {opts.redis_url}")
        common.log(notes[-1])
        layers.remove("redis")
    restarts: dict[str, int] = {}

    def start(layer: str) -> Server:
        return start_server(layer, opts, stamp)

    for layer in layers:
        common.log(f"== layer {layer}: starting daphne")
        server: Server | None = None
        try:
            server = start(layer)
            for n, m in opts.cases:
                for rep in range(opts.reps):
                    for impl in common.rotated(opts.impls, rep):
                        server = common.ensure_settled(server, opts.settle_timeout, start)
                        t0 = time.monotonic()
                        result = run_client(server, impl, n, m, opts)
                        result.update(layer=layer, rep=rep + 1, wall_s=round(time.monotonic() - t0, 2))
                        runs.append(result)
                        common.log(
                            f"  {layer:<6} N={n:<5} M={m:<4} rep {rep + 1} {impl:<10} {describe(result)}"
                        )
            common.settle(server, opts.settle_timeout)  # leave Redis without bench keys
        except RuntimeError as exc:
            notes.append(f"layer {layer} stopped early: {exc}")
            common.log(notes[-1])
        finally:
            if server is not None:
                restarts[layer] = server.restarts
                common.stop_server(server)

    rows = summarize(runs, opts)
    print_table(rows, opts)
    elapsed = time.monotonic() - started
    out = opts.out or common.RESULTS / f"fanout-{stamp}.json"
    meta = {
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
        "versions": common.versions(),
        "notes": notes,
        **opts.extra,
    }
    common.write_report(out, meta, rows, runs, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
