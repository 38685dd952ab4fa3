"""Load: 1,000 concurrent official JS clients on one daphne, and nothing left behind.

One Node process (``clients/load_clients.mjs``) opens 1,000 ``@microsoft/signalr`` connections to
``/hubs/tasks`` as real clients do (negotiate, then WebSockets), ramping with a bounded number of
``start()`` calls in flight. Each connection subscribes to one of its user's tasks (10 users,
10 tasks each: 100 task groups), pings once, and stops after a random 1-5 s (seeded), counted from
the moment all of them are up and subscribed, so all 1,000 are open at once at the peak; the
monitor must then count 1,000 connections in 100 groups.

While it runs, the daphne process's memory and open files are sampled (``/proc/<pid>/status``). Afterwards, within
a bounded wait: the monitor's gauges on /metrics read 0 (active connections, groups, stale), and
Redis holds nothing of the connections under the site's key prefix: no membership sets, presence
leases or user keys (``hubs.delivery.members``), no monitor records or lease/activity entries
(``monitoring.monitor``), no channels-redis group memberships, no unclaimed negotiate tokens.
No stale cleanup runs here (no Celery worker for the ``celery`` runner), so only the
connections' own teardown can have cleaned up.

The figures (connect time median/p95/max, peak server RSS, wall time) are printed and written to
``artifacts/load.json``.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from .harness import CLIENTS, ROOT, ClientProcess, Server, Site
from .test_monitoring import scrape

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CONNECTIONS = 1000
USERS = 10
TASKS_PER_USER = 10
CONCURRENCY = 25  # start() calls in flight at once: more only adds queueing (see docs/monitoring.md)
SEED = 20240605
PRESENCE_TTL = 3  # leases and monitor records renewed every second, gone 3 s after a leak
CLIENT_DEADLINE = 150  # the client process reports and exits by then (s); slow machines only
SETTLE_TIMEOUT = 15  # for the gauges and Redis to read empty after the clients stopped (s)
FD_NEEDED = 4096  # daphne holds a socket per client plus Redis connections; Node the same
ARTIFACTS = ROOT / "artifacts"
HUB = "tasks"
PREFIX = f"e2eload{os.getpid()}"  # the site's key prefix in Redis (one per run)


@pytest.fixture
def enough_file_descriptors():
    """Raise this process's soft open-file limit (inherited by daphne and Node) when it is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_NEEDED if hard == resource.RLIM_INFINITY else min(FD_NEEDED, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit != resource.RLIM_INFINITY and limit < 2 * CONNECTIONS:
        pytest.fail(f"open-file limit {limit} < {2 * CONNECTIONS}: raise the hard limit (ulimit -Hn)")
    yield limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


SETUP = """
import json
from django.contrib.auth import get_user_model
from hubs.auth.tokens import issue_token
from conduit_rt.demo.models import Task
users = []
for i in range({users}):
    user, _ = get_user_model().objects.get_or_create(username=f"load{{i}}")
    tasks = [str(Task.objects.create(owner=user).pk) for _ in range({tasks})]
    users.append({{"token": issue_token(user), "taskIds": tasks}})
print(json.dumps(users))
"""


def create_users(site: Site) -> list[dict[str, Any]]:
    """``USERS`` users with ``TASKS_PER_USER`` tasks each and a token, in one management command."""
    out = site.shell(SETUP.format(users=USERS, tasks=TASKS_PER_USER))
    return json.loads(out.splitlines()[-1])


class ProcessSampler:
    """Samples a process's VmRSS and open file descriptors every 100 ms in a thread; VmHWM (the
    kernel's own peak RSS) is read at the end."""

    def __init__(self, pid: int) -> None:
        self.proc = Path(f"/proc/{pid}")
        self.rss: list[int] = []
        self.fds: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in KiB."""
        found: dict[str, int] = {}
        for line in (self.proc / "status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
        return found

    def open_files(self) -> int:
        return len(list((self.proc / "fd").iterdir()))

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.rss.append(self.memory()["VmRSS"])
                self.fds.append(self.open_files())
            except (OSError, KeyError):
                return

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_clients(server: Server, users: list[dict[str, Any]]) -> ClientProcess:
    config = {
        "url": f"{server.url}/hubs/{HUB}",
        "users": users,
        "connections": CONNECTIONS,
        "concurrency": CONCURRENCY,
        "lifeMinMs": 1000,
        "lifeMaxMs": 5000,
        "lifeFrom": "peak",
        "seed": SEED,
        "holdAtPeak": True,
        "startTimeoutMs": 30000,
        "callTimeoutMs": 15000,
        "stopTimeoutMs": 10000,
        "deadlineMs": CLIENT_DEADLINE * 1000,
    }
    return ClientProcess(["node", str(CLIENTS / "load_clients.mjs"), json.dumps(config)], "load")


def leftovers(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """What the connections left in Redis under the site's key prefix (all empty when clean)."""

    def keys(pattern: str) -> list[str]:
        return sorted(k.decode() for k in client.scan_iter(match=pattern, count=1000))

    return {
        # member sets, the leases sorted set, user-of:<id> keys (hubs/delivery/members.py)
        "members": keys(f"{prefix}:members:*"),
        # connection records and the per-hub lease and activity indexes (monitoring/monitor.py)
        "monitor_records": keys(f"{prefix}:monitor:conn:*"),
        "monitor_leases": client.zcard(f"{prefix}:monitor:leases:{HUB}"),
        "monitor_activity": client.zcard(f"{prefix}:monitor:activity:{HUB}"),
        # channels-redis groups: sorted sets "<layer prefix>:group:<group>" (conduit_rt/settings.py)
        "layer_groups": keys(f"{prefix}:layer::group:*"),
        # negotiated connections never claimed by a WebSocket (hubs/connections.py, Django cache)
        "negotiated": keys(f"{prefix}:*negotiated:*"),
    }


def is_clean(found: dict[str, Any]) -> bool:
    return not any(found.values())


def server_records(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    raws = [client.get(key) for key in client.scan_iter(match=f"{prefix}:monitor:server:*")]
    return [json.loads(raw) for raw in raws if raw is not None]


def log_problems(site: Site, server: Server) -> list[str]:
    """ERROR/CRITICAL/WARNING lines and tracebacks in the daphne log."""
    log = site.workdir / f"daphne-{server.port}.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [
        line
        for line in lines
        if any(word in line for word in (" ERROR ", " CRITICAL ", " WARNING ", "Traceback"))
    ]


def hub_gauges(server: Server) -> dict[str, float]:
    metrics = scrape(server, timeout=10)
    return {
        name: metrics.get(f'conduit_{name}{{hub="{HUB}"}}', 0.0)
        for name in ("active_connections", "groups", "stale_connections")
    }


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def test_a_thousand_connections_come_and_go_without_leaks(make_site, redis_url, enough_file_descriptors):
    started = time.monotonic()
    site = make_site(
        CONDUIT_RT_KEY_PREFIX=PREFIX,
        CONDUIT_RT_PRESENCE_TTL=str(PRESENCE_TTL),
        CONDUIT_RT_CLEANUP_RUNNER="celery",  # and no worker: nothing but the teardown cleans up
    )
    store = redis.Redis.from_url(redis_url)
    clients: ClientProcess | None = None
    try:
        users = create_users(site)
        server = site.server()
        assert server.process is not None
        assert is_clean(leftovers(store, PREFIX))
        sampler = ProcessSampler(server.process.pid)
        idle_rss, idle_fds = sampler.memory()["VmRSS"], sampler.open_files()
        with sampler:
            clients = start_clients(server, users)
            # Every connection is up and subscribed; the clients hold there until the peak is read
            # (lifetimes start at "go"), so the readings cannot race the first stops.
            at_peak = clients.expect("peak", timeout=CLIENT_DEADLINE)
            peak_gauges = hub_gauges(server)
            peak_records = sum(1 for _ in store.scan_iter(match=f"{PREFIX}:monitor:conn:*", count=1000))
            clients.command(cmd="go")
            result = clients.expect("load", timeout=CLIENT_DEADLINE)
            clients.process.wait(timeout=10)
        hwm = sampler.memory()["VmHWM"]

        # The process record may still count a few connections: the presence round in flight
        # when the last ones closed wrote it, and it is rewritten or expires PRESENCE_TTL later.
        first_servers = server_records(store, PREFIX)
        settle_started = time.monotonic()
        while True:
            gauges = hub_gauges(server)
            found = leftovers(store, PREFIX)
            servers = server_records(store, PREFIX)
            counted = [record["connections"] for record in servers]
            if (not any(gauges.values()) and is_clean(found) and not any(counted)) or (
                time.monotonic() - settle_started > SETTLE_TIMEOUT
            ):
                break
            time.sleep(0.2)  # polling another process's state: nothing to wait on instead
        settled = time.monotonic() - settle_started
        fds_after = sampler.open_files()
        problems = log_problems(site, server)
    finally:
        if clients is not None:
            clients.close()
        site.close()
        store.close()

    connect = result["connectMs"] or {}
    figures = {
        "connections": CONNECTIONS,
        "users": USERS,
        "task_groups": USERS * TASKS_PER_USER,
        "concurrency": CONCURRENCY,
        "seed": SEED,
        "connected": result["connected"],
        "peak_open": result["peakOpen"],
        "peak_gauges": peak_gauges,
        "peak_monitor_records": peak_records,
        "connect_ms": connect,
        "subscribe_ms": result["subscribeMs"],
        "ramp_seconds": result["rampSeconds"],
        "connects_per_second": result["connectsPerSecond"],
        "client_wall_seconds": result["wallSeconds"],
        "server_rss_idle_mib": mib(idle_rss),
        "server_rss_peak_sampled_mib": mib(max(sampler.rss or [idle_rss])),
        "server_rss_hwm_mib": mib(hwm),
        "server_fds": {"idle": idle_fds, "peak": max(sampler.fds or [idle_fds]), "after": fds_after},
        "settled_after_seconds": round(settled, 1),
        "after": {
            "gauges": gauges,
            "leftovers": {k: v if isinstance(v, int) else len(v) for k, v in found.items()},
            "process_record_connections": {
                "first_read": [r["connections"] for r in first_servers],
                "last_read": counted,
            },
        },
        "test_wall_seconds": round(time.monotonic() - started, 1),
        "open_files_limit": enough_file_descriptors,
        "daphne_log_problems": len(problems),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(
        json.dumps({**figures, "client": result, "daphne_log_sample": problems[:20]}, indent=2)
    )
    print(
        f"\n[load] {result['connected']}/{CONNECTIONS} connected, {result['peakOpen']} open at once "
        f"(monitor: {peak_gauges['active_connections']:.0f}); connect ms median {connect.get('median')} "
        f"p95 {connect.get('p95')} max {connect.get('max')}; {result['connectsPerSecond']} connects/s; "
        f"server RSS {figures['server_rss_idle_mib']} MiB idle, {figures['server_rss_hwm_mib']} MiB peak; "
        f"clients {result['wallSeconds']} s, test {figures['test_wall_seconds']} s"
    )
    print(f"[load] {json.dumps(figures)}")
    for line in problems[:10]:
        print(f"[load] daphne log: {line}")

    # Every connection opened, subscribed, pinged and stopped cleanly, all of them open at once.
    assert result["status"] == "done", result
    assert result["connected"] == CONNECTIONS and result["failedStart"] == 0, result["errors"]
    assert result["failedSubscribe"] == 0 and result["failedPing"] == 0, result["errors"]
    assert result["unexpectedClose"] == 0 and result["failedStop"] == 0, result["errors"]
    assert result["stopped"] == CONNECTIONS and result["stillOpen"] == 0, result
    assert result["peakOpen"] == at_peak["open"] == CONNECTIONS
    # ... and the monitor saw them all, in all the task groups.
    assert peak_gauges["active_connections"] == CONNECTIONS, peak_gauges
    assert peak_gauges["groups"] == USERS * TASKS_PER_USER, peak_gauges
    assert peak_records == CONNECTIONS

    # Afterwards the monitor and Redis read empty: no leaked connections, groups, leases or
    # memberships; the process record counts no connection (or has expired).
    assert gauges == {"active_connections": 0, "groups": 0, "stale_connections": 0}, gauges
    assert is_clean(found), {k: v if isinstance(v, int) else v[:10] for k, v in found.items()}
    assert not any(counted), servers
