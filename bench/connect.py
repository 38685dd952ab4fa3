"""Connections at scale: Conduit RT's real authenticated connect path against a plain Channels
consumer and python-socketio, side by side in one invocation (issue 11, "Measure").

    .venv/bin/python bench/connect.py                      # 500-client storm, 5,000 idle for 30 s, 3 reps
    .venv/bin/python bench/connect.py --quick              # smoke run: tiny numbers, one rep (~25 s)
    .venv/bin/python bench/connect.py --idle-connections 5000,20000 --reps 3
    .venv/bin/python bench/connect.py --sides conduit,socketio --storm 1000 --concurrency 100

The sides, each served by one server process of its own on a free loopback port:

- ``conduit``: the real project (``manage.py serve``, daphne; ``conduit_rt.settings`` with
  ``REDIS_URL`` = ``--redis-url``, db 14 by default, key prefix ``bench-connect``; a fresh SQLite
  file, migrated first; one bench user per ``--conns-per-user`` connections, with tokens from
  ``hubs.auth.tokens.issue_token``, or ``manage.py issue_token benchuser --create`` for one user).
  A client does what the official JS client does: negotiate (version 1, ``Authorization:
  Bearer``), the WebSocket with ``id`` and ``access_token``, the JSON handshake; admission
  control's refusals (503 + ``Retry-After``) are waited out and retried, and counted apart.
- ``plain``: ``bench.plain_consumer.PlainConsumer`` under daphne (``bench.asgi``, the Redis layer):
  the WebSocket upgrade and accept.
- ``socketio``: ``bench.socketio_app`` (python-socketio) under uvicorn: the Engine.IO WebSocket
  transport directly, ``40`` and its answer.

For each repetition and side (order rotated between repetitions), a fresh server and
``--client-procs`` client processes (``bench/connect_client.py``) run the phases:

1. **warm-up**: a few connections opened and closed (the server's first connection pays imports);
2. **storm**: ``--storm`` clients connect with at most ``--concurrency`` in flight: accepted/s (first
   attempt to last success), server CPU-seconds per accepted connection (``/proc/<pid>/stat``, all
   threads), failures by kind, 503 refusals honoured (Retry-After) and retried;
3. **idle**, for each of ``--idle-connections`` (ascending): top the connections up to that count,
   let the server settle, then hold them ``--idle-seconds``: server CPU % of one core over that
   window, RSS per connection ((RSS then - RSS before the storm) / connections), and whether every
   connection is still open (the clients count closes they did not ask for);
4. **leave**: every connection closed at once; then, within ``--leave-wait`` s, the server's open
   sockets and (conduit) what the connections left in Redis under the key prefix (membership sets,
   presence leases, user keys, monitor records, channels-redis group entries, unclaimed negotiate
   tokens, as ``tests/e2e/test_load.py`` finds them). The server log is read per phase: ERROR
   records, tracebacks and their kinds.

The table (medians of the repetitions) goes to stdout, progress to stderr, and everything to
``bench/results/connect-<UTC timestamp>.json``; server logs to ``bench/results/connect-<stamp>-*.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.common import Server, num  # noqa: E402

SIDES = ("conduit", "plain", "socketio")
#: Conduit RT's key prefix for the bench (layer, cache, members, monitor), deleted before and after.
KEY_PREFIX = "bench-connect"
#: The plain side's Conduit RT prefix (it never writes any; only so that nothing could collide).
PLAIN_PREFIX = "bench-connect-plain"
HUB = "tasks"
HUB_PATH = "/hubs/tasks"
BENCH_USER = "benchuser"
#: Other processes' CPU (cores) during a phase above which the table warns.
NOISY = 0.15
#: A client process above this share of one core during a phase may have been the bottleneck.
CLIENT_BUSY = 0.8
#: Packages whose versions the report lists besides ``bench.common.BASE_VERSIONS``.
VERSIONS = ("python-socketio", "python-engineio", "uvicorn", "uvloop", "websockets", "orjson")
TARGET_VS_SIO = 1.0


class BenchFailed(RuntimeError):
    """A phase of one side's run could not go on (the message says why)."""


@dataclass(kw_only=True)
class Options:
    """The parsed command line."""

    sides: list[str]
    storm: int
    concurrency: int
    idle_levels: list[int]
    idle_seconds: float
    settle_seconds: float
    reps: int
    quick: bool
    warmup: int
    client_procs: int
    client_loop: str
    redis_url: str
    step_timeout: float
    connect_timeout: float | None
    leave_timeout: float
    leave_wait: float
    ping_interval: float
    server_log_level: str
    serve_args: list[str]
    conduit_env: dict[str, str]
    conns_per_user: int
    retry_jitter: bool
    keep_db: bool
    out: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ /proc


#: TCP states that are neither LISTEN (0A) nor TIME_WAIT (06): a socket some process still holds.
_HELD_STATES = {"01", "02", "03", "04", "05", "07", "08", "09", "0B"}


def server_sockets(port: int) -> int:
    """TCP sockets whose local port is ``port`` that a process still holds (the server's side of
    its connections: established or closing), from ``/proc/net/tcp`` and ``tcp6``."""
    suffix = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split(None, 4)
                    if len(fields) > 3 and fields[1].endswith(suffix) and fields[3] in _HELD_STATES:
                        count += 1
        except OSError:
            continue
    return count


@dataclass
class Sample:
    """CPU counters (seconds) and the server's RSS at one moment."""

    wall: float
    server: float | None
    redis: float | None
    machine: float | None
    rss: int | None


def sample(server_pid: int | None, redis: int | None) -> Sample:
    return Sample(
        wall=time.time(),
        server=common.process_cpu(server_pid),
        redis=common.process_cpu(redis),
        machine=common.machine_busy(),
        rss=common.rss_kib(server_pid),
    )


def delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ------------------------------------------------------------------------------------ clients


class WorkerError(RuntimeError):
    """A client process died, answered with an error, or did not answer in time."""


class Workers:
    """The client processes of one side's run, driven through their stdin/stdout."""

    def __init__(self, side: str, server: Server, opts: Options, env: dict[str, str], log: IO[bytes]) -> None:
        self.side = side
        self.procs: list[subprocess.Popen[bytes]] = []
        self.replies: list[queue.Queue[dict[str, Any] | None]] = []
        per_proc = math.ceil(max([*opts.idle_levels, opts.storm]) / opts.client_procs)
        for index in range(opts.client_procs):
            command = [
                sys.executable, "-m", "bench.connect_client", "--side", side,
                "--url", f"http://127.0.0.1:{server.port}",
                "--step-timeout", str(opts.step_timeout), "--close-timeout", str(opts.leave_timeout),
                "--ping-interval", str(opts.ping_interval), "--max-connections", str(per_proc + 64),
                "--seed", str(index + 1), "--loop", opts.client_loop,
                "--token-offset", str(index), "--token-stride", str(opts.client_procs),
                "--retry-jitter" if opts.retry_jitter else "--no-retry-jitter",
            ]  # fmt: skip
            proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
            replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
            threading.Thread(target=self._pump, args=(proc, replies), daemon=True).start()
            self.procs.append(proc)
            self.replies.append(replies)

    @staticmethod
    def _pump(proc: subprocess.Popen[bytes], replies: queue.Queue[dict[str, Any] | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    replies.put(json.loads(line))
        replies.put(None)  # the process ended

    def _await(self, index: int, kind: str, deadline: float) -> dict[str, Any]:
        try:
            reply = self.replies[index].get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty as exc:
            raise WorkerError(f"client {index} did not answer {kind!r} in time") from exc
        if reply is None:
            raise WorkerError(f"client {index} exited (code {self.procs[index].poll()}) before {kind!r}")
        if reply.get("error"):
            raise WorkerError(f"client {index}: {kind}: {reply['error']}")
        if reply.get("reply") != kind:
            raise WorkerError(f"client {index}: expected a {kind!r} reply, got {reply}")
        return reply

    def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for index in range(len(self.procs)):
            self._await(index, "ready", deadline)

    def ask(self, commands: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Send ``commands[i]`` to client ``i`` (all first, then wait); their replies."""
        for proc, command in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            try:
                proc.stdin.write((json.dumps(command) + "\n").encode())
                proc.stdin.flush()
            except OSError as exc:
                raise WorkerError(f"client {self.procs.index(proc)} is gone: {exc}") from exc
        deadline = time.monotonic() + timeout
        return [self._await(i, c["cmd"], deadline) for i, c in enumerate(commands)]

    def ask_all(self, command: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return self.ask([command] * len(self.procs), timeout)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd": "exit"}\n')
                proc.stdin.close()
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as integers allow."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def percentile_ms(times: list[float], q: float) -> float | None:
    return common.percentile(sorted(times), q)


# ------------------------------------------------------------------------------------ servers


def http_status(url: str, timeout: float = 2.0) -> int:
    """The status of a GET (redirects not followed); 0 if nothing answers."""
    parts = url.split("/", 3)
    host, port = parts[2].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + (parts[3] if len(parts) > 3 else ""))
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def base_env() -> dict[str, str]:
    """The environment without anything that would configure a side behind the bench's back."""
    drop = ("CONDUIT_RT_", "CONDUIT_DEMO_", "DJANGO_", "REDIS_URL", "DATABASE_URL", "LOG_LEVEL", "BENCH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return env


@dataclass
class Context:
    """What every run of one invocation shares."""

    opts: Options
    stamp: str
    database_url: str
    tokens_path: Path
    redis_pid: int | None
    redis_ok: bool


def conduit_env(ctx: Context) -> dict[str, str]:
    env = base_env()
    env.update(
        DJANGO_SETTINGS_MODULE="conduit_rt.settings",
        DATABASE_URL=ctx.database_url,
        REDIS_URL=ctx.opts.redis_url,
        CONDUIT_RT_KEY_PREFIX=KEY_PREFIX,
        LOG_LEVEL=ctx.opts.server_log_level,
    )
    env.update(ctx.opts.conduit_env)
    return env


def plain_env(ctx: Context) -> dict[str, str]:
    env = base_env()
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=ctx.database_url,
        REDIS_URL=ctx.opts.redis_url,
        CONDUIT_RT_KEY_PREFIX=PLAIN_PREFIX,
        CONDUIT_RT_RATE_LIMIT="",
        LOG_LEVEL=ctx.opts.server_log_level,
    )
    return env


def launch(side: str, ctx: Context, log_path: Path) -> Server:
    """Start ``side``'s server on a free port and wait until it answers HTTP."""
    port = common.free_port()
    if side == "conduit":
        command = [sys.executable, "manage.py", "serve", "--port", str(port), "--no-access-log"]
        command += ctx.opts.serve_args
        env, probe, label = conduit_env(ctx), "/favicon.ico", "conduit (manage.py serve)"
    elif side == "plain":
        command = common.daphne_command(port, "bench.asgi:application")
        env, probe, label = plain_env(ctx), "/bench/stats", "plain (daphne, bench.asgi)"
    else:
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--log-level", "warning", "--no-access-log", "bench.socketio_app:application"]
        env, probe, label = base_env(), "/bench/stats", "socketio (uvicorn, bench.socketio_app)"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(name=side, label=label, port=port, proc=proc, log_path=log_path)
    deadline = time.monotonic() + common.STARTUP_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchFailed(f"{label} exited with {proc.returncode}; see {log_path}")
            status = http_status(f"http://127.0.0.1:{port}{probe}")
            if status == 200 or (side == "conduit" and status):  # conduit: any answer (a redirect)
                return server
            time.sleep(0.2)
        raise BenchFailed(f"{label} did not answer within {common.STARTUP_TIMEOUT:.0f} s; see {log_path}")
    except BaseException:
        common.stop_server(server)
        raise


def manage(env: dict[str, str], *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


#: ``manage.py shell`` code creating the bench users (no password) and writing their tokens.
USERS_SCRIPT = """
import json
from pathlib import Path
from django.contrib.auth import get_user_model
from hubs.auth.tokens import issue_token
User = get_user_model()
names = [f"{prefix}{{i:05d}}" for i in range({count})]
known = set(User.objects.filter(username__in=names).values_list("username", flat=True))
User.objects.bulk_create([User(username=n) for n in names if n not in known])
users = User.objects.filter(username__in=names).order_by("username")
Path({path!r}).write_text(json.dumps([issue_token(u, ttl={ttl}) for u in users]))
"""
TOKEN_TTL = 7 * 86400


def user_count(opts: Options) -> int:
    """How many bench users the conduit side needs (``--conns-per-user`` connections each)."""
    most = max(opts.idle_levels[-1], opts.storm)
    return 1 if opts.conns_per_user <= 0 else max(1, math.ceil(most / opts.conns_per_user))


def prepare_conduit(opts: Options, database_url: str, tokens_path: Path) -> int:
    """Migrate the bench database and create the bench users, their tokens in ``tokens_path``;
    how many users. One user: ``manage.py issue_token benchuser --create``; more: one
    ``manage.py shell`` run (``USERS_SCRIPT``), which signs them with the same ``issue_token``."""
    env = base_env()
    env.update(DJANGO_SETTINGS_MODULE="conduit_rt.settings", DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    done = manage(env, "migrate", "--noinput", "-v", "0")
    if done.returncode != 0:
        raise BenchFailed(
            "migrate failed: " + " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        )
    count = user_count(opts)
    if count == 1:
        done = manage(env, "issue_token", BENCH_USER, "--create", "--ttl", str(TOKEN_TTL))
        token = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode == 0 and token:
            tokens_path.write_text(json.dumps([token]))
    else:
        code = USERS_SCRIPT.format(prefix=BENCH_USER, count=count, path=str(tokens_path), ttl=TOKEN_TTL)
        done = manage(env, "shell", "-v", "0", "-c", code)
    if done.returncode != 0 or not tokens_path.exists():
        raise BenchFailed(
            "creating the bench users failed: " + " | ".join((done.stderr or "").splitlines()[-3:])
        )
    return count


# ------------------------------------------------------------------------------------ redis


def leftovers(url: str, prefix: str = KEY_PREFIX, hub: str = HUB) -> dict[str, int]:
    """What connections left in Redis under ``prefix`` (``tests/e2e/test_load.py``'s kinds), counted:
    keys and, for sets, their entries. All 0 when clean."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    try:

        def keys(pattern: str) -> list[bytes]:
            return list(client.scan_iter(match=pattern, count=1000))

        members = keys(f"{prefix}:members:*")
        leases = [k for k in members if k == f"{prefix}:members:leases".encode()]
        users = [k for k in members if k.startswith(f"{prefix}:members:user-of:".encode())]
        special = set(leases) | set(users)
        sets = [k for k in members if k not in special]
        groups = keys(f"{prefix}:layer::group:*")
        with client.pipeline(transaction=False) as pipe:
            for key in sets:
                pipe.scard(key)
            for key in groups:
                pipe.zcard(key)
            pipe.zcard(f"{prefix}:monitor:leases:{hub}")
            pipe.zcard(f"{prefix}:monitor:activity:{hub}")
            cards = pipe.execute()
        found = {
            "member_sets": len(sets),
            "member_entries": int(sum(cards[: len(sets)])),
            "presence_leases": int(client.zcard(f"{prefix}:members:leases")) if leases else 0,
            "user_keys": len(users),
            "monitor_records": len(keys(f"{prefix}:monitor:conn:*")),
            "monitor_leases": int(cards[-2]),
            "monitor_activity": int(cards[-1]),
            "layer_groups": len(groups),
            "layer_group_entries": int(sum(cards[len(sets) : len(sets) + len(groups)])),
            "negotiated": len(keys(f"{prefix}:*negotiated:*")),
        }
    finally:
        client.close()
    found["keys"] = sum(
        found[k]
        for k in (
            "member_sets",
            "presence_leases",
            "user_keys",
            "monitor_records",
            "layer_groups",
            "negotiated",
        )
    )
    found["set_entries"] = sum(
        found[k] for k in ("member_entries", "monitor_leases", "monitor_activity", "layer_group_entries")
    )
    return found


def redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


class RedisClients:
    """Samples Redis' ``connected_clients`` in a thread (every 0.25 s) while a phase runs: how many
    connections the server side opened (a burst of them is what "pool errors" come from)."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.before: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _count(self, client: Any) -> int | None:
        try:
            return int(client.info("clients")["connected_clients"])
        except (*redis_errors(), KeyError, ValueError):
            return None

    def _run(self, client: Any) -> None:
        while not self._stop.wait(0.25):
            found = self._count(client)
            if found is not None:
                self.peak = max(self.peak or 0, found)

    def __enter__(self) -> RedisClients:
        if self.url:
            import redis

            client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
            self.before = self.peak = self._count(client)
            self._thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def figures(self) -> dict[str, int | None]:
        added = None if self.before is None or self.peak is None else self.peak - self.before
        return {
            "redis_clients_before": self.before,
            "redis_clients_peak": self.peak,
            "redis_clients_added": added,
        }


def process_records(url: str, prefix: str = KEY_PREFIX) -> list[int]:
    """The connection counts the monitor's process records still carry."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    try:
        counts = []
        for key in client.scan_iter(match=f"{prefix}:monitor:server:*", count=1000):
            raw = client.get(key)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                counts.append(int(json.loads(raw).get("connections", 0)))
        return counts
    finally:
        client.close()


# ------------------------------------------------------------------------------------ logs

_RECORD = re.compile(r"^(?:\d{4}-\d\d-\d\d[ T][\d:,.]+ )?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b:?\s*(.*)$")
_NOISE = re.compile(r"0x[0-9a-f]+|\b[0-9a-f]{8,}\b|\d+|'[^']{12,}'|\"[^\"]{12,}\"", re.IGNORECASE)
_POOL = re.compile(r"No connection available|Too many connections|MaxConnections|pool", re.IGNORECASE)


def kind_of(text: str) -> str:
    """A log message or exception line with its numbers and ids blurred, for counting by kind."""
    return _NOISE.sub("N", text.strip())[:120]


def log_problems(text: str) -> dict[str, Any]:
    """ERROR/CRITICAL records, WARNING records, tracebacks and their kinds in a piece of server log.

    A record's kind is the last exception line of its traceback if it has one, else its message
    (numbers and ids blurred); a traceback outside any record counts as an error. The kinds of
    errors and of warnings are counted apart; ``redis_pool_errors``: the error kinds naming the
    Redis connection pool; ``killed_instances``: daphne's "took too long to shut down and was
    killed" warnings (a connection whose teardown outran ``application_close_timeout``).
    """
    errors = warnings = tracebacks = killed = 0
    error_kinds: Counter[str] = Counter()
    warning_kinds: Counter[str] = Counter()
    current: list[str | None] | None = None  # [level, message, exception line]
    in_traceback = False

    def finish() -> None:
        nonlocal errors, warnings, killed
        if current is None:
            return
        level, message, exception = current
        if level in ("ERROR", "CRITICAL", "TRACEBACK"):
            errors += 1
            error_kinds[kind_of(exception or f"{level} {message}")] += 1
        elif level == "WARNING":
            warnings += 1
            if "took too long to shut down and was killed" in (message or ""):
                killed += 1
                warning_kinds["daphne: application instance took too long to shut down and was killed"] += 1
            else:
                warning_kinds[kind_of(exception or str(message))] += 1

    for line in text.splitlines():
        match = _RECORD.match(line)
        if match:
            finish()
            current, in_traceback = [match.group(1), match.group(2), None], False
        elif line.startswith("Traceback (most recent call last)"):
            tracebacks += 1
            in_traceback = True
            if current is None:
                current = ["TRACEBACK", "", None]
        elif (
            in_traceback
            and current is not None
            and line.strip()
            and not line.startswith((" ", "\t", "During handling", "The above exception"))
        ):
            current[2] = line  # the exception (of a chain: the last one)
            in_traceback = False  # until a chained "Traceback" line
    finish()
    pool = sum(count for kind, count in error_kinds.items() if _POOL.search(kind))
    return {
        "errors": errors,
        "warnings": warnings,
        "tracebacks": tracebacks,
        "redis_pool_errors": pool,
        "killed_instances": killed,
        "kinds": dict(error_kinds.most_common(8)),
        "warning_kinds": dict(warning_kinds.most_common(8)),
    }


class LogReader:
    """Reads a server log piece by piece (what was written since the last read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        return data.decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------ phases


def phase_connect(workers: Workers, server: Server, ctx: Context, count: int, name: str) -> dict[str, Any]:
    """``count`` more connections over the clients (at most ``--concurrency`` in flight in all)."""
    opts = ctx.opts
    parts = len(workers.procs)
    timeout = opts.connect_timeout or (60.0 + count / 20.0)
    commands = [
        {"cmd": "connect", "count": n, "concurrency": max(1, c), "timeout": timeout}
        for n, c in zip(split(count, parts), split(opts.concurrency, parts), strict=True)
    ]
    with RedisClients(redis_watched(workers.side, ctx)) as clients:
        before = sample(server.proc.pid, ctx.redis_pid)
        replies = workers.ask(commands, timeout + 30)
        after = sample(server.proc.pid, ctx.redis_pid)
    established = sum(r["established"] for r in replies)
    failures: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    examples: dict[str, str] = {}
    times: list[float] = []
    reasons: Counter[str] = Counter()
    for r in replies:
        failures.update(r["failures"])
        refused.update(r["refused_by_step"])
        reasons.update(r.get("refused_reasons") or {})
        examples.update(r.get("failure_examples") or {})
        times.extend(r["connect_ms"])
    firsts = [r["first_attempt"] for r in replies if r.get("first_attempt")]
    lasts = [r["last_success"] for r in replies if r.get("last_success")]
    wall = (max(lasts) - min(firsts)) if firsts and lasts else None
    window = after.wall - before.wall
    server_cpu = delta(before.server, after.server)
    client_cpu = sum(r["cpu_s"] for r in replies)
    shares = [r["cpu_s"] / r["wall_s"] for r in replies if r.get("wall_s")]
    figures: dict[str, Any] = {
        "phase": name,
        "attempted": count,
        "established": established,
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "failure_examples": examples,
        "refused": sum(refused.values()),
        "refused_by_step": dict(refused),
        "refused_reasons": dict(reasons),
        "refused_connections": sum(r["refused_connections"] for r in replies),
        "wall_s": rnd(wall),
        "accepted_per_s": rnd(established / wall, 1) if wall and wall > 0 else None,
        "server_cpu_s": rnd(server_cpu),
        "server_cpu_ms_per_conn": rnd(server_cpu * 1000 / established, 2)
        if server_cpu and established
        else None,
        "conns_per_server_cpu_s": rnd(established / server_cpu, 1) if server_cpu else None,
        "server_cpu_share": rnd(server_cpu / window) if server_cpu is not None and window > 0 else None,
        "redis_cpu_share": rnd(delta(before.redis, after.redis) / window)
        if before.redis is not None and after.redis is not None and window > 0
        else None,
        "client_cpu_s": rnd(client_cpu),
        "client_cpu_share": rnd(client_cpu / window) if window > 0 else None,
        "client_max_share": rnd(max(shares)) if shares else None,
        "other_cpu_share": other_share(before, after, client_cpu),
        "connect_p50_ms": percentile_ms(times, 0.5),
        "connect_p99_ms": percentile_ms(times, 0.99),
        "connect_max_ms": max(times) if times else None,
        "open": sum(r["open"] for r in replies),
        **clients.figures(),
    }
    return figures


def redis_watched(side: str, ctx: Context) -> str | None:
    """The Redis whose clients to count during ``side``'s phases (``None``: it uses none)."""
    return ctx.opts.redis_url if ctx.redis_ok and side in ("conduit", "plain") else None


def other_share(before: Sample, after: Sample, client_cpu: float) -> float | None:
    """CPU (cores) that processes other than the server, the clients and Redis used in a window."""
    window = after.wall - before.wall
    machine = delta(before.machine, after.machine)
    if machine is None or window <= 0:
        return None
    used = (
        (delta(before.server, after.server) or 0.0) + (delta(before.redis, after.redis) or 0.0) + client_cpu
    )
    return rnd(max(0.0, machine - used) / window)


def statuses(workers: Workers) -> dict[str, Any]:
    replies = workers.ask_all({"cmd": "status"}, 30)
    unexpected: Counter[str] = Counter()
    for r in replies:
        unexpected.update(r["unexpected"])
    return {
        "open": sum(r["open"] for r in replies),
        "unexpected": dict(unexpected),
        "unexpected_total": sum(unexpected.values()),
        "frames_in": sum(r["frames_in"] for r in replies),
        "pings_sent": sum(r["pings_sent"] for r in replies),
        "pongs_sent": sum(r["pongs_sent"] for r in replies),
        "cpu_s": sum(r["cpu_s"] for r in replies),
        "client_rss_kib": sum(r["rss_kib"] or 0 for r in replies),
    }


def phase_idle(
    workers: Workers, server: Server, ctx: Context, level: int, base_rss: int | None
) -> dict[str, Any]:
    """Hold the connections ``--idle-seconds`` (after ``--settle-seconds``); the idle figures."""
    opts = ctx.opts
    time.sleep(opts.settle_seconds)
    st0 = statuses(workers)
    before = sample(server.proc.pid, ctx.redis_pid)
    time.sleep(opts.idle_seconds)
    after = sample(server.proc.pid, ctx.redis_pid)
    st1 = statuses(workers)
    window = after.wall - before.wall
    server_cpu = delta(before.server, after.server)
    client_cpu = st1["cpu_s"] - st0["cpu_s"]
    held = st1["open"]
    grown = None if after.rss is None or base_rss is None else after.rss - base_rss
    return {
        "target": level,
        "held": held,
        "alive": held == level and st1["unexpected_total"] == 0,
        "unexpected_closes": st1["unexpected_total"],
        "unexpected": st1["unexpected"],
        "window_s": rnd(window),
        "server_cpu_share": rnd(server_cpu / window) if server_cpu is not None and window > 0 else None,
        "server_cpu_us_per_conn_s": rnd(server_cpu * 1e6 / window / held, 2)
        if server_cpu is not None and window > 0 and held
        else None,
        "redis_cpu_share": rnd(delta(before.redis, after.redis) / window)
        if before.redis is not None and after.redis is not None and window > 0
        else None,
        "client_cpu_share": rnd(client_cpu / window) if window > 0 else None,
        "other_cpu_share": other_share(before, after, client_cpu),
        "server_rss_kib": after.rss,
        "server_rss_base_kib": base_rss,
        "rss_per_conn_kib": rnd(grown / held, 2) if grown is not None and held else None,
        "server_frames_per_conn_min": rnd((st1["frames_in"] - st0["frames_in"]) * 60 / window / held, 2)
        if window > 0 and held
        else None,
        "client_pings_per_conn_min": rnd((st1["pings_sent"] - st0["pings_sent"]) * 60 / window / held, 2)
        if window > 0 and held
        else None,
        "client_rss_kib": st1["client_rss_kib"],
        "server_sockets": server_sockets(server.port),
    }


def phase_leave(workers: Workers, server: Server, ctx: Context, side: str, held: int) -> dict[str, Any]:
    """Close every connection at once, then wait (bounded) for the server to let go of them."""
    with RedisClients(redis_watched(side, ctx)) as clients:
        figures = _leave(workers, server, ctx, side, held)
    figures.update(clients.figures())
    return figures


def _leave(workers: Workers, server: Server, ctx: Context, side: str, held: int) -> dict[str, Any]:
    opts = ctx.opts
    before = sample(server.proc.pid, ctx.redis_pid)
    command = {"cmd": "leave", "timeout": opts.leave_timeout, "drop_http": True}
    asked = time.monotonic()
    replies = workers.ask_all(command, opts.leave_timeout + 30)
    answered = time.monotonic() - asked
    closed = sample(server.proc.pid, ctx.redis_pid)
    errors: Counter[str] = Counter()
    for r in replies:
        errors.update(r["errors"])
    started = min(r["started"] for r in replies)
    figures: dict[str, Any] = {
        "closing": sum(r["closing"] for r in replies),
        "held_before": held,
        "close_timeouts": sum(r["timed_out"] for r in replies),
        "close_errors": dict(errors),
        "abnormal_close_codes": sum(r["abnormal_close_codes"] for r in replies),
        "leave_s": rnd(max(r["closed_at"] for r in replies) - started),
        "leave_reply_s": rnd(answered),
        "server_cpu_s_close": rnd(delta(before.server, closed.server)),
    }
    deadline = time.monotonic() + opts.leave_wait
    found: dict[str, int] | None = None
    first: dict[str, int] | None = None
    timeline: list[dict[str, Any]] = []  # what the server still held, poll by poll
    clean_after: float | None = None
    while True:
        polled = time.monotonic()
        sockets = server_sockets(server.port)
        counted = time.monotonic()
        redis_error = None
        if side == "conduit" and ctx.redis_ok:
            try:
                found = leftovers(opts.redis_url)
                first = first or found
            except redis_errors() as exc:  # e.g. "max number of clients reached": try again
                redis_error = f"{type(exc).__name__}: {exc}"
        point: dict[str, Any] = {
            "t": round(time.time() - started, 2),
            "sockets_s": round(counted - polled, 3),
            "redis_s": round(time.monotonic() - counted, 3),
            "sockets": sockets,
        }
        if found is not None:
            point.update(keys=found["keys"], set_entries=found["set_entries"])
        if redis_error:
            point["redis_error"] = redis_error[:200]
        timeline.append(point)
        if sockets == 0 and (found is None or not (found["keys"] or found["set_entries"])):
            clean_after = time.time() - started
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    after = sample(server.proc.pid, ctx.redis_pid)
    figures.update(
        server_sockets_after=sockets,
        clean_after_s=rnd(clean_after, 2),
        server_cpu_s_leave=rnd(delta(before.server, after.server)),
        server_cpu_ms_per_conn_leave=rnd(delta(before.server, after.server) * 1000 / held, 2)
        if held and before.server is not None and after.server is not None
        else None,
    )
    figures["timeline"] = timeline
    if found is not None:
        figures["leftovers_first_read"] = first
        figures["leftovers"] = found
        figures["leftover_keys"] = found["keys"]
        figures["leftover_set_entries"] = found["set_entries"]
        try:
            figures["process_record_connections"] = process_records(opts.redis_url)
        except redis_errors() as exc:
            figures["process_record_connections"] = f"{type(exc).__name__}: {exc}"
    return figures


def run_side(side: str, rep: int, ctx: Context) -> dict[str, Any]:
    """One repetition of one side: a fresh server and clients, every phase; the run's record."""
    opts = ctx.opts
    result: dict[str, Any] = {"side": side, "rep": rep, "status": "ok"}
    log_path = common.RESULTS / f"connect-{ctx.stamp}-{side}-r{rep}.log"
    client_log = common.RESULTS / f"connect-{ctx.stamp}-clients.log"
    result["server_log"] = str(log_path.relative_to(ROOT))
    server: Server | None = None
    workers: Workers | None = None
    logs: dict[str, dict[str, Any]] = {}
    reader: LogReader | None = None
    t0 = time.monotonic()
    try:
        if side == "conduit":
            common.forget_redis_keys(opts.redis_url, KEY_PREFIX)
        server = launch(side, ctx, log_path)
        reader = LogReader(log_path)
        reader.offset = 0  # the startup belongs to the warm-up's piece
        env = base_env()
        if side == "conduit":
            env["BENCH_CONNECT_TOKENS"] = str(ctx.tokens_path)
        with open(client_log, "ab") as clog:
            workers = Workers(side, server, opts, env, clog)
        workers.start()
        result["server_pid"] = server.proc.pid

        # 1. warm-up: the server's first connections pay for imports and pools.
        warm = phase_connect(workers, server, ctx, max(opts.warmup, len(workers.procs)), "warmup")
        if not warm["established"]:
            raise BenchFailed(f"no warm-up connection: {warm['failures']} {warm['failure_examples']}")
        workers.ask_all(
            {"cmd": "leave", "timeout": opts.leave_timeout, "drop_http": False}, opts.leave_timeout + 30
        )
        settle_until = time.monotonic() + max(5.0, opts.settle_seconds * 3)
        while server_sockets(server.port) > len(workers.procs) * 2 and time.monotonic() < settle_until:
            time.sleep(0.2)
        time.sleep(opts.settle_seconds)
        logs["warmup"] = log_problems(reader.read())
        base = sample(server.proc.pid, ctx.redis_pid)
        result["server_rss_base_kib"] = base.rss

        # 2. storm.
        common.log(f"    {side}: storm of {opts.storm}, at most {opts.concurrency} in flight")
        storm = phase_connect(workers, server, ctx, opts.storm, "storm")
        result["storm"] = storm
        logs["storm"] = log_problems(reader.read())
        common.log(f"    {side}: {describe_storm(storm)}")
        if not storm["established"]:
            raise BenchFailed(f"the storm connected nothing: {storm['failures']} {storm['failure_examples']}")

        # 3. idle, at each level.
        result["idle"] = []
        held = storm["open"]
        for level in opts.idle_levels:
            missing = level - held
            ramp = phase_connect(workers, server, ctx, missing, "ramp") if missing > 0 else None
            if ramp is not None:
                common.log(f"    {side}: ramp to {level}: {describe_storm(ramp)}")
            idle = phase_idle(workers, server, ctx, level, base.rss)
            idle["ramp"] = ramp
            result["idle"].append(idle)
            held = idle["held"]
            logs[f"idle-{level}"] = log_problems(reader.read())
            common.log(f"    {side}: idle at {level}: {describe_idle(idle)}")
            if not held:
                raise BenchFailed(f"no connection held at {level}")

        # 4. leave.
        leave = phase_leave(workers, server, ctx, side, held)
        result["leave"] = leave
        logs["leave"] = log_problems(reader.read())
        leave["log"] = logs["leave"]
        common.log(f"    {side}: leave: {describe_leave(leave)}")
    except Exception as exc:  # noqa: BLE001 - reported; the other sides still run
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}"
        common.log(f"    {side}: FAILED: {result['error']}")
    finally:
        if workers is not None:
            workers.close()
        if server is not None:
            if reader is not None:
                logs["other"] = log_problems(reader.read())
            common.stop_server(server)
        if side == "conduit":
            common.forget_redis_keys(opts.redis_url, KEY_PREFIX)
    result["logs"] = logs
    result["log_total"] = merge_logs(list(logs.values()))
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def merge_logs(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    warning_kinds: Counter[str] = Counter()
    for piece in pieces:
        kinds.update(piece.get("kinds", {}))
        warning_kinds.update(piece.get("warning_kinds", {}))
    totals = {
        key: sum(p.get(key, 0) for p in pieces)
        for key in ("errors", "warnings", "tracebacks", "redis_pool_errors", "killed_instances")
    }
    return totals | {"kinds": dict(kinds.most_common(8)), "warning_kinds": dict(warning_kinds.most_common(8))}


def describe_storm(f: dict[str, Any]) -> str:
    return (
        f"{f['established']}/{f['attempted']} in {f['wall_s']} s = {num(f['accepted_per_s'], ',.1f')}/s, "
        f"{num(f['server_cpu_ms_per_conn'], '.2f')} ms server CPU each "
        f"(server {num(f['server_cpu_share'], '.0%')}, clients {num(f['client_cpu_share'], '.0%')}), "
        f"failed {f['failed']} {f['failures'] or ''}, refused {f['refused']}"
    )


def describe_idle(f: dict[str, Any]) -> str:
    return (
        f"{f['held']}/{f['target']} held, server {num(f['server_cpu_share'], '.1%')} of a core, "
        f"{num(f['rss_per_conn_kib'], '.1f')} KiB each, unexpected closes {f['unexpected_closes']}"
    )


def describe_leave(f: dict[str, Any]) -> str:
    text = (
        f"{f['closing']} closed in {f['leave_s']} s, server sockets left {f['server_sockets_after']}, "
        f"clean after {f['clean_after_s']} s; log: {f['log']['errors']} errors, "
        f"{f['log']['tracebacks']} tracebacks"
    )
    if "leftovers" in f:
        text += f"; leftovers {f['leftover_keys']} keys, {f['leftover_set_entries']} set entries"
    return text


# ------------------------------------------------------------------------------------ summary


def summarize(runs: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
    rows = []
    for side in opts.sides:
        mine = [r for r in runs if r["side"] == side]
        if not mine:
            continue
        storms = [r["storm"] for r in mine if r.get("storm")]
        leaves = [r["leave"] for r in mine if r.get("leave")]
        pick_storm = functools.partial(common.median_of, storms)
        pick_leave = functools.partial(common.median_of, leaves)
        idle_rows = []
        for level in opts.idle_levels:
            idles = [i for r in mine for i in r.get("idle", []) if i["target"] == level]
            pick = functools.partial(common.median_of, idles)
            idle_rows.append(
                {
                    "connections": level,
                    "runs": len(idles),
                    "all_alive_runs": sum(1 for i in idles if i["alive"]),
                    "held_min": min((i["held"] for i in idles), default=None),
                    "unexpected_closes_max": max((i["unexpected_closes"] for i in idles), default=None),
                    "server_cpu_share": pick("server_cpu_share"),
                    "rss_per_conn_kib": pick("rss_per_conn_kib"),
                    "redis_cpu_share": pick("redis_cpu_share"),
                    "client_cpu_share": pick("client_cpu_share"),
                    "other_cpu_share": pick("other_cpu_share"),
                    "ramp_accepted_per_s": common.median_of(
                        [i["ramp"] for i in idles if i.get("ramp")], "accepted_per_s"
                    ),
                }
            )
        totals = [r["log_total"] for r in mine]
        storm_logs = [r["logs"].get("storm", {}) for r in mine]
        rows.append(
            {
                "side": side,
                "runs": len(mine),
                "statuses": common.count_statuses(mine),
                "storm": {
                    "accepted_per_s": pick_storm("accepted_per_s"),
                    "conns_per_server_cpu_s": pick_storm("conns_per_server_cpu_s"),
                    "server_cpu_ms_per_conn": pick_storm("server_cpu_ms_per_conn"),
                    "server_cpu_share": pick_storm("server_cpu_share"),
                    "redis_cpu_share": pick_storm("redis_cpu_share"),
                    "client_cpu_share": pick_storm("client_cpu_share"),
                    "client_max_share": max((s["client_max_share"] or 0 for s in storms), default=None),
                    "other_cpu_share": pick_storm("other_cpu_share"),
                    "redis_clients_added": pick_storm("redis_clients_added"),
                    "connect_p50_ms": pick_storm("connect_p50_ms"),
                    "connect_p99_ms": pick_storm("connect_p99_ms"),
                    "established_min": min((s["established"] for s in storms), default=None),
                    "failed": pick_storm("failed"),
                    "failed_max": max((s["failed"] for s in storms), default=None),
                    "refused": pick_storm("refused"),
                    "log_errors": common.median_of(storm_logs, "errors"),
                    "log_tracebacks": common.median_of(storm_logs, "tracebacks"),
                },
                "idle": idle_rows,
                "leave": {
                    "leave_s": pick_leave("leave_s"),
                    "redis_clients_added": pick_leave("redis_clients_added"),
                    "clean_after_s": pick_leave("clean_after_s"),
                    "server_sockets_after_max": max(
                        (x["server_sockets_after"] for x in leaves), default=None
                    ),
                    "server_cpu_ms_per_conn": pick_leave("server_cpu_ms_per_conn_leave"),
                    "log_errors": common.median_of([x["log"] for x in leaves], "errors"),
                    "log_errors_max": max((x["log"]["errors"] for x in leaves), default=None),
                    "log_tracebacks": common.median_of([x["log"] for x in leaves], "tracebacks"),
                    "redis_pool_errors": common.median_of([x["log"] for x in leaves], "redis_pool_errors"),
                    "redis_pool_errors_max": max(
                        (x["log"]["redis_pool_errors"] for x in leaves), default=None
                    ),
                    "killed_instances": common.median_of([x["log"] for x in leaves], "killed_instances"),
                    "killed_instances_max": max(
                        (x["log"].get("killed_instances", 0) for x in leaves), default=None
                    ),
                    "leftover_keys": pick_leave("leftover_keys"),
                    "leftover_keys_max": max((x.get("leftover_keys", 0) for x in leaves), default=None)
                    if side == "conduit"
                    else None,
                    "leftover_set_entries": pick_leave("leftover_set_entries"),
                    "leftover_set_entries_max": max(
                        (x.get("leftover_set_entries", 0) for x in leaves), default=None
                    )
                    if side == "conduit"
                    else None,
                    "leftovers": {
                        key: common.median([float(x["leftovers"][key]) for x in leaves if "leftovers" in x])
                        for key in (leaves[0].get("leftovers") or {})
                    }
                    if leaves
                    else {},
                },
                "log_total": {
                    "errors": common.median_of(totals, "errors"),
                    "tracebacks": common.median_of(totals, "tracebacks"),
                    "redis_pool_errors": common.median_of(totals, "redis_pool_errors"),
                    "kinds": merge_logs(totals)["kinds"],
                },
            }
        )
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    by_side = {r["side"]: r for r in rows}

    def ratio(other: str, key: str) -> float | None:
        a = by_side.get("conduit", {}).get("storm", {}).get(key)
        b = by_side.get(other, {}).get("storm", {}).get(key)
        return round(a / b, 2) if a and b else None

    return {
        "accepted_per_s_vs_socketio": ratio("socketio", "accepted_per_s"),
        "per_cpu_s_vs_socketio": ratio("socketio", "conns_per_server_cpu_s"),
        "accepted_per_s_vs_plain": ratio("plain", "accepted_per_s"),
        "per_cpu_s_vs_plain": ratio("plain", "conns_per_server_cpu_s"),
    }


def print_table(rows: list[dict[str, Any]], found: dict[str, float | None], opts: Options) -> None:
    print()
    print(
        f"Connect storm: {opts.storm} clients, at most {opts.concurrency} in flight; medians of "
        f"{opts.reps} rep(s)"
    )
    header = (
        f"{'side':<9} {'acc/s':>8} {'per cpu-s':>9} {'srv ms':>7} {'srv cpu':>7} {'redis':>6} "
        f"{'clients':>7} {'cli max':>7} {'other':>6} {'p50 ms':>7} {'p99 ms':>8} {'failed':>6} "
        f"{'refused':>7} {'errors':>6}  runs"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row["storm"]
        print(
            f"{row['side']:<9} {num(s['accepted_per_s'], ',.1f'):>8} "
            f"{num(s['conns_per_server_cpu_s'], ',.1f'):>9} "
            f"{num(s['server_cpu_ms_per_conn'], '.2f'):>7} {num(s['server_cpu_share'], '.0%'):>7} "
            f"{num(s['redis_cpu_share'], '.0%'):>6} {num(s['client_cpu_share'], '.0%'):>7} "
            f"{num(s['client_max_share'], '.0%'):>7} {num(s['other_cpu_share'], '.0%'):>6} "
            f"{num(s['connect_p50_ms'], '.1f'):>7} {num(s['connect_p99_ms'], '.1f'):>8} "
            f"{num(s['failed'], '.0f'):>6} {num(s['refused'], '.0f'):>7} {num(s['log_errors'], '.0f'):>6}  "
            f"{common.format_statuses(row['statuses'])}"
        )
    print()
    print(f"Idle: held {opts.idle_seconds:g} s after {opts.settle_seconds:g} s of settling; medians")
    header = (
        f"{'side':<9} {'conns':>7} {'srv cpu':>8} {'KiB/conn':>8} {'redis':>6} {'clients':>7} "
        f"{'other':>6} {'ramp/s':>7} {'alive':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        for idle in row["idle"]:
            alive = f"{idle['all_alive_runs']}/{idle['runs']} runs"
            print(
                f"{row['side']:<9} {idle['connections']:>7,} {num(idle['server_cpu_share'], '.1%'):>8} "
                f"{num(idle['rss_per_conn_kib'], '.1f'):>8} {num(idle['redis_cpu_share'], '.1%'):>6} "
                f"{num(idle['client_cpu_share'], '.0%'):>7} {num(idle['other_cpu_share'], '.0%'):>6} "
                f"{num(idle['ramp_accepted_per_s'], ',.0f'):>7} {alive:>11}"
            )
    print()
    print(
        f"Leave: all closed at once, then up to {opts.leave_wait:g} s for the server to let go; medians (max)"
    )
    header = (
        f"{'side':<9} {'leave s':>7} {'clean s':>7} {'sockets':>7} {'errors':>10} {'tracebk':>7} "
        f"{'pool errs':>10} {'killed':>11} {'left keys':>13} {'set entries':>13}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        x = row["leave"]
        keys = f"{num(x['leftover_keys'], '.0f')} ({num(x['leftover_keys_max'], 'd')})"
        entries = f"{num(x['leftover_set_entries'], '.0f')} ({num(x['leftover_set_entries_max'], 'd')})"
        errors = f"{num(x['log_errors'], '.0f')} ({num(x['log_errors_max'], 'd')})"
        pool = f"{num(x['redis_pool_errors'], '.0f')} ({num(x['redis_pool_errors_max'], 'd')})"
        killed = f"{num(x['killed_instances'], '.0f')} ({num(x['killed_instances_max'], 'd')})"
        print(
            f"{row['side']:<9} {num(x['leave_s'], '.2f'):>7} {num(x['clean_after_s'], '.1f'):>7} "
            f"{num(x['server_sockets_after_max'], 'd'):>7} {errors:>10} {num(x['log_tracebacks'], '.0f'):>7} "
            f"{pool:>10} {killed:>11} {keys if row['side'] == 'conduit' else '-':>13} "
            f"{entries if row['side'] == 'conduit' else '-':>13}"
        )
    conduit = next((r for r in rows if r["side"] == "conduit"), None)
    if conduit and conduit["leave"]["leftovers"]:
        parts = ", ".join(
            f"{k} {v:g}"
            for k, v in conduit["leave"]["leftovers"].items()
            if k not in ("keys", "set_entries") and v is not None
        )
        print(f"conduit leftovers (medians): {parts}")
    for row in rows:
        added = row["leave"].get("redis_clients_added")
        if added is not None and row["side"] in ("conduit", "plain"):
            print(f"{row['side']}: Redis clients added during the leave (median): {added:g}")
    print()
    labels = {
        "accepted_per_s_vs_socketio": "conduit / socketio accepted/s",
        "per_cpu_s_vs_socketio": "conduit / socketio per server CPU-s",
        "accepted_per_s_vs_plain": "conduit / plain accepted/s",
        "per_cpu_s_vs_plain": "conduit / plain per server CPU-s",
    }
    for key, label in labels.items():
        value = found.get(key)
        verdict = ""
        if key.endswith("socketio"):
            verdict = "-" if value is None else ("meets" if value >= TARGET_VS_SIO else "below")
            verdict = f"   target >= {TARGET_VS_SIO:.1f}: {verdict}"
        print(f"{label:<38} {num(value, '.2f'):>5}{verdict}")
    print()
    print("acc/s: connections established / (last success - first attempt); per cpu-s: established / server")
    print("CPU-seconds (user+system, all threads) in the storm; srv ms: server CPU per connection; srv cpu,")
    print("redis, clients (all client processes), cli max (busiest client process), other (the rest of the")
    print("machine): shares of one core. p50/p99: one connection's connect time, retries included. errors:")
    print("ERROR records in the server log during the phase. KiB/conn: (server RSS idle - RSS before the")
    print("storm) / connections. alive: runs in which every connection was still open at the end.")
    print("Leave: clean s = seconds until the server held no socket (and, conduit, Redis held nothing of")
    print("the connections); errors, tracebk, pool errs (errors naming the Redis pool): the server log")
    print("from the leave to the end of the wait; killed: daphne's 'took too long to shut down and was")
    print("killed' (teardowns cut off); left keys / set entries: conduit's leftovers in Redis then.")
    noisy = [r["side"] for r in rows if (r["storm"].get("other_cpu_share") or 0.0) > NOISY]
    if noisy:
        print(
            f"WARNING: other processes used over {NOISY:.0%} of a core during the storm of "
            f"{', '.join(noisy)}:"
        )
        print("the figures are disturbed by a neighbour; rerun on a quiet machine.")
    busy = [r["side"] for r in rows if (r["storm"].get("client_max_share") or 0.0) > CLIENT_BUSY]
    if busy:
        print(
            f"WARNING: a client process used over {CLIENT_BUSY:.0%} of a core in the storm of "
            f"{', '.join(busy)}:"
        )
        print("the clients may have been the bottleneck; use more --client-procs (and cores).")


# ------------------------------------------------------------------------------------ main


def parse_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(v.replace("_", "").replace(",", "")) for v in text.split(",") if v.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"a list of connection counts, e.g. 5000,20000 (got {text!r})"
        ) from exc
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be at least 1 (got {text!r})")
    return levels


def parse_env(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("CONDUIT_RT_"):
        raise argparse.ArgumentTypeError(f"CONDUIT_RT_<KEY>=<value> (got {text!r})")
    return name, value


def parse_args(argv: list[str] | None) -> Options:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: storm 20, 40 idle for 2 s, one rep")
    parser.add_argument(
        "--sides", type=common.parse_choices(SIDES), default=list(SIDES), help="conduit,plain,socketio"
    )
    parser.add_argument("--storm", type=int, default=None, help="clients in the connect storm (default 500)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="connects in flight at most (default 50)"
    )
    parser.add_argument(
        "--idle-connections", type=parse_levels, default=None,
        help="connections held idle, one or more counts (default 5000; e.g. 5000,20000)",
    )  # fmt: skip
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle window (default 30)")
    parser.add_argument(
        "--settle-seconds", type=float, default=None, help="before the idle window (default 5)"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--warmup", type=int, default=5, help="connections opened and closed first")
    parser.add_argument(
        "--client-procs", type=int, default=None,
        help="client processes per side (default: half the cores, 1 to 4; at least one per 10,000 "
        "connections)",
    )  # fmt: skip
    parser.add_argument("--client-loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/14", help="conduit's and plain's Redis"
    )
    parser.add_argument("--step-timeout", type=float, default=60.0, help="one connection, retries included")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=None,
        help="one connect phase (default 60 s + 1 s per 20 conns)",
    )
    parser.add_argument("--leave-timeout", type=float, default=30.0, help="the clients' close handshakes")
    parser.add_argument(
        "--leave-wait", type=float, default=None, help="for the server to let go (default 15)"
    )
    parser.add_argument("--ping-interval", type=float, default=15.0, help="conduit clients' Ping interval")
    parser.add_argument("--server-log-level", default="WARNING", help="LOG_LEVEL of the Django servers")
    parser.add_argument(
        "--serve-args", default="", help="more arguments for conduit's manage.py serve (one string)"
    )
    parser.add_argument(
        "--conduit-env", type=parse_env, action="append", default=[],
        help="a CONDUIT_RT_<KEY>=<value> for the conduit server (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--conns-per-user", type=int, default=10,
        help="conduit: connections per bench user (default 10; 0: one user for all, which "
        "MAX_CONNECTIONS_PER_USER refuses past its cap)",
    )  # fmt: skip
    parser.add_argument(
        "--retry-jitter", action=argparse.BooleanOptionalAction, default=True,
        help="after a refusal wait Retry-After plus up to as much again (as conduit.mjs), or exactly it",
    )  # fmt: skip
    parser.add_argument("--keep-db", action="store_true", help="keep the bench SQLite file")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/…)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    storm = args.storm if args.storm is not None else (20 if quick else 500)
    levels = args.idle_connections or [40 if quick else 5000]
    for name, value in (("storm", storm), ("concurrency", args.concurrency), ("reps", args.reps)):
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if levels[0] < storm:
        parser.error(f"--idle-connections ({levels[0]}) must be at least --storm ({storm}): the storm's "
                     "connections stay open and the idle phase tops them up")  # fmt: skip
    cpus = os.cpu_count() or 1
    procs = args.client_procs or max(math.ceil(levels[-1] / 10_000), min(4, max(1, cpus // 2)))
    return Options(
        sides=args.sides,
        storm=storm,
        concurrency=args.concurrency or (5 if quick else 50),
        idle_levels=levels,
        idle_seconds=args.idle_seconds if args.idle_seconds is not None else (2.0 if quick else 30.0),
        settle_seconds=args.settle_seconds if args.settle_seconds is not None else (1.0 if quick else 5.0),
        reps=args.reps or (1 if quick else 3),
        quick=quick,
        warmup=max(1, args.warmup if not quick else min(args.warmup, 2)),
        client_procs=max(1, procs),
        client_loop=args.client_loop,
        redis_url=args.redis_url,
        step_timeout=args.step_timeout,
        connect_timeout=args.connect_timeout,
        leave_timeout=args.leave_timeout,
        leave_wait=args.leave_wait if args.leave_wait is not None else (5.0 if quick else 15.0),
        ping_interval=args.ping_interval,
        server_log_level=args.server_log_level,
        serve_args=args.serve_args.split(),
        conduit_env=dict(args.conduit_env),
        conns_per_user=args.conns_per_user,
        retry_jitter=args.retry_jitter,
        keep_db=args.keep_db,
        out=args.out,
        extra={"quick": quick},
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    common.exit_on_sigterm()
    stamp = common.utc_stamp()
    started = time.monotonic()
    notes: list[str] = []
    # The server holds every connection, each client process its share; plus Redis pools, logs.
    nofile = common.raise_nofile(max(opts.idle_levels[-1], opts.storm) + 4096)
    if nofile[0] != -1 and nofile[0] < opts.idle_levels[-1] + 1024:
        notes.append(
            f"open-file limit {nofile[0]} (hard {nofile[1]}) < {opts.idle_levels[-1]} connections + 1024: "
            "a server process cannot hold them all (it also needs files for Redis, its database, logs); "
            "raise the hard limit (ulimit -Hn, or run as a user who may)"
        )
        common.log("NOTE: " + notes[-1])
    redis_ok = common.redis_ready(opts.redis_url)
    sides = list(opts.sides)
    if not redis_ok:
        for side in ("conduit", "plain"):
            if side in sides:
                sides.remove(side)
                notes.append(f"{side} skipped: no Redis at {opts.redis_url}")
                common.log(notes[-1])
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    sqlite_path = common.RESULTS / f"connect-{stamp}.sqlite3"
    ctx = Context(
        opts=opts,
        stamp=stamp,
        database_url=f"sqlite:///{sqlite_path}",
        tokens_path=common.RESULTS / f"connect-{stamp}-tokens.json",
        redis_pid=common.redis_pid(opts.redis_url) if redis_ok else None,
        redis_ok=redis_ok,
    )
    runs: list[dict[str, Any]] = []
    try:
        if "conduit" in sides:
            common.log(f"== migrating the conduit database ({sqlite_path.name}), {user_count(opts)} user(s)")
            try:
                users = prepare_conduit(opts, ctx.database_url, ctx.tokens_path)
                opts.extra["conduit_users"] = users
            except (BenchFailed, subprocess.SubprocessError) as exc:
                sides.remove("conduit")
                notes.append(f"conduit skipped: {exc}")
                common.log(notes[-1])
        for rep in range(opts.reps):
            for side in common.rotated(sides, rep) if sides else []:
                common.log(f"== rep {rep + 1}/{opts.reps}: {side}")
                runs.append(run_side(side, rep + 1, ctx))
    finally:
        with contextlib.suppress(FileNotFoundError):
            ctx.tokens_path.unlink()
        if not opts.keep_db:
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(sqlite_path) + suffix).unlink()

    opts.sides = [s for s in opts.sides if s in sides]
    rows = summarize(runs, opts)
    found = ratios(rows)
    print_table(rows, found, opts)
    for run in runs:
        if run["status"] != "ok":
            notes.append(f"rep {run['rep']} {run['side']} failed: {run.get('error')}")
    for note in notes:
        print(f"NOTE: {note}")
    elapsed = time.monotonic() - started
    out = opts.out or common.RESULTS / f"connect-{stamp}.json"
    meta = {
        "started_utc": stamp,
        "elapsed_s": round(elapsed, 1),
        "sides": opts.sides,
        "storm": opts.storm,
        "concurrency": opts.concurrency,
        "idle_connections": opts.idle_levels,
        "idle_seconds": opts.idle_seconds,
        "settle_seconds": opts.settle_seconds,
        "reps": opts.reps,
        "client_procs": opts.client_procs,
        "client_loop": opts.client_loop,
        "ping_interval": opts.ping_interval,
        "redis_url": opts.redis_url,
        "key_prefix": KEY_PREFIX,
        "server_log_level": opts.server_log_level,
        "serve_args": opts.serve_args,
        "conduit_env": opts.conduit_env,
        "conns_per_user": opts.conns_per_user,
        "retry_jitter": opts.retry_jitter,
        "leave_wait_s": opts.leave_wait,
        "cpus": os.cpu_count(),
        "nofile": list(nofile),
        "versions": common.versions(VERSIONS),
        "target_vs_socketio": TARGET_VS_SIO,
        "notes": notes,
        **opts.extra,
    }
    common.write_report(out, meta, rows, runs, elapsed, ratios=found)
    return 0 if runs and all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
