"""As many connections as one server process can hold (issue 11, item 6: "20,000 connections on
one process"): all stay alive when idle, one broadcast reaches every one of them, and when they
all leave nothing is left behind.

How many: one daphne (``manage.py serve``) needs a file descriptor for each WebSocket and a few
hundred more for itself (its listener, the Redis pools of the channel layer and the stores,
SQLite, the HTTP connections of negotiates and scrapes). The hard open-file limit (``ulimit
-Hn``) bounds the process and cannot be raised from here; on the machine this was written on it
is 20,000, exactly the target, so the test holds ``N = min(20,000, hard limit - RESERVE)``
connections (19,600 there) and prints N. The soft limit of the test process is raised to the
hard limit for the run, and the server and the clients inherit it.

The clients are ``clients/many_clients.py`` processes (asyncio and aiohttp, the SignalR JSON
protocol by hand, as the official clients speak it): ``CLIENT_PROCESSES`` of them share the N
connections, so none comes near its own limit. Each connection is a real one of ``/hubs/tasks``:
negotiate with a token, the WebSocket, the JSON handshake; then a Ping every 15 s (the official
clients' keep-alive), and the server's keep-alive at its default (a Ping every 15 s, a client
silent for 30 s closed). Admission control would slow the ramp (``CONNECT_RATE``: 200 attempts a
second) and refuse the 101st connection of a user (``MAX_CONNECTIONS_PER_USER``): the rate is
turned off (``CONDUIT_RT_CONNECT_RATE=0``) and the connections are spread over enough users
(``PER_USER`` each); ``MAX_CONNECTIONS`` stays at its default (25,000, above N).

What is checked:

1. All N connect (no failure of any kind), and the server's monitor counts N active
   connections on ``/metrics`` and N in the process's own record.
2. An idle window of ``IDLE_SECONDS`` (a deadline; nothing is sent but the keep-alive Pings):
   afterwards every connection is still open on the client side (no close, no error, no Close
   message, no failed ping), the server pinged each of them, and the monitor still counts N.
   (Most connections have been idle much longer by then: the ramp itself takes a minute or
   more, past ``CLIENT_TIMEOUT``, 30 s, for the first ones.)
3. One ``clients.all.send`` from another process (``manage.py shell``) reaches every one of the
   N connections exactly once within ``BROADCAST_TIMEOUT``.
4. All leave at once: within ``SETTLE_TIMEOUT`` the monitor's gauges read 0 and Redis holds
   nothing of them (``test_load.leftovers``); the server logged no error or warning.

The server's CPU share and RSS per connection during the idle window, the connect and leave
times and the broadcast's time are printed, never asserted (performance is measured in
``bench/``). On a 2-core machine the test takes a little over 2 minutes, about 80 s of it the
ramp.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from .harness import CLIENTS, PYTHON, ROOT, ClientProcess, Server, Site
from .test_load import ProcessSampler, hub_gauges, is_clean, leftovers, log_problems, server_records

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

TARGET = 20_000  # connections, the figure
RESERVE = 400  # file descriptors the server keeps for itself (it used about 230 besides the WebSockets)
CLIENT_PROCESSES = 4
CONCURRENCY = 8  # connections being opened at once per client process: 32, below daphne's backlog (50)
PER_USER = 50  # connections per user: half of MAX_CONNECTIONS_PER_USER (100)
USER_CAP = 100  # MAX_CONNECTIONS_PER_USER's default
KEEP_ALIVE = 15.0  # s: the clients' Ping interval, the official clients' default (the server's too)
CONNECT_TIMEOUT = 150.0  # s for every connection to be open
IDLE_SECONDS = 20.0
BROADCAST_TIMEOUT = 60.0  # s for the one send to reach all of them
GAUGE_TIMEOUT = 30.0  # s for the monitor to count what the clients see
LEAVE_TIMEOUT = 60.0  # s for every close handshake
SETTLE_TIMEOUT = 60.0  # s for the gauges and Redis to read empty after they all left
BROADCAST = "Broadcast"

T = TypeVar("T")

SEND = (
    "import json, time\n"
    "from hubs.send import get_hub_context\n"
    "everyone = get_hub_context('conduit_rt.demo.hubs.TaskHub').clients.all\n"
    "sent_at = time.time()\n"
    "everyone.send({target!r}, {{'nonce': {nonce!r}}})\n"
    "print(json.dumps({{'sentAt': sent_at, 'returnedAt': time.time()}}))\n"
)


def connection_count() -> int:
    """N: as many as the hard open-file limit leaves room for on one process, at most TARGET."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return TARGET if hard == resource.RLIM_INFINITY else min(TARGET, hard - RESERVE)


@pytest.fixture
def all_file_descriptors() -> Iterator[int]:
    """This process's soft open-file limit raised to the hard limit (the server and the client
    processes inherit it), restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def make_tokens(site: Site, users: int) -> list[str]:
    """A token for each of ``users`` users, in one management command."""
    code = (
        "import json; from django.contrib.auth import get_user_model; "
        "from hubs.auth.tokens import issue_token; "
        f"print(json.dumps([issue_token(get_user_model().objects.get_or_create(username=f'many{{i}}')[0]) "
        f"for i in range({users})]))"
    )
    return json.loads(site.shell(code, timeout=120).splitlines()[-1])


def start_clients(server: Server, tokens: list[str], total: int) -> list[ClientProcess]:
    """``CLIENT_PROCESSES`` clients sharing ``total`` connections; each user's tokens in one of
    them only, at most ``PER_USER`` connections per user over all."""
    started: list[ClientProcess] = []
    for k in range(CLIENT_PROCESSES):
        count = total // CLIENT_PROCESSES + (1 if k < total % CLIENT_PROCESSES else 0)
        mine = tokens[k::CLIENT_PROCESSES]
        assert math.ceil(count / len(mine)) <= USER_CAP, (count, len(mine))
        config = {
            "url": f"{server.url}/hubs/tasks",
            "tokens": mine,
            "count": count,
            "concurrency": CONCURRENCY,
            "pingIntervalS": KEEP_ALIVE,
            "stepTimeoutS": 30,
            "target": BROADCAST,
            "seed": k,
        }
        started.append(
            ClientProcess(
                [PYTHON, str(CLIENTS / "many_clients.py"), json.dumps(config)],
                f"many{k}",
                env={**os.environ, "PYTHONPATH": str(ROOT)},  # it imports bench.ping_slots
            )
        )
    return started


def ask(clients: list[ClientProcess], event: str, timeout: float, **command: Any) -> list[dict[str, Any]]:
    """Send ``command`` to every client at once; their answers (``event``), in order."""
    for client in clients:
        client.command(**command)
    deadline = time.monotonic() + timeout
    return [client.expect(event, timeout=max(1.0, deadline - time.monotonic())) for client in clients]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], timeout: float) -> T:
    """``probe()`` until ``done(value)`` or ``timeout`` seconds passed; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)  # polling another process's state: nothing to wait on instead


class Sampler(ProcessSampler):
    """``test_load.ProcessSampler`` once a second instead of every 100 ms: listing 20,000 open
    files takes about 30 ms, which would take a quarter of a core from the server."""

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.rss.append(self.memory()["VmRSS"])
                self.fds.append(self.open_files())
            except (OSError, KeyError):
                return


def process_count(store: redis.Redis, prefix: str) -> list[int]:
    """The connections each serving process's own record counts."""
    return [record["connections"] for record in server_records(store, prefix)]


def test_as_many_connections_as_one_process_holds_stay_alive_idle_and_all_get_one_broadcast(
    make_site: Callable[..., Site], redis_url: str, clients: list[ClientProcess], all_file_descriptors: int
) -> None:
    total = connection_count()
    assert total >= 1000, f"hard open-file limit {all_file_descriptors}: too low for this test"
    print(
        f"\n[many] N = {total} connections (hard open-file limit {all_file_descriptors}, reserve {RESERVE})"
    )
    started = time.monotonic()
    # A key prefix of its own: nothing another site left in this Redis database counts here.
    site = make_site(CONDUIT_RT_CONNECT_RATE="0", CONDUIT_RT_KEY_PREFIX=f"e2emany{os.getpid()}")
    store = redis.Redis.from_url(redis_url)
    try:
        hold_them(site, store, clients, total)
    finally:
        site.close()
        store.close()
        print(f"[many] test {time.monotonic() - started:.0f} s")


def hold_them(site: Site, store: redis.Redis, clients: list[ClientProcess], total: int) -> None:
    """Steps 1-4 of the module docstring with ``total`` connections to a server of ``site``."""
    prefix = site.env["CONDUIT_RT_KEY_PREFIX"]
    tokens = make_tokens(site, math.ceil(total / PER_USER))
    server = site.server()
    assert server.process is not None
    pid = server.process.pid
    print(f"[many] server {server.url} (pid {pid}), log {server.log_path}")
    assert hub_gauges(server)["active_connections"] == 0
    sampler = Sampler(pid)
    baseline_kib = sampler.memory()["VmRSS"]

    many = start_clients(server, tokens, total)
    clients.extend(many)
    for client in many:
        client.expect("ready", timeout=30)

    # 1. All N connect, and the server counts them.
    with sampler:
        connected = ask(many, "connected", CONNECT_TIMEOUT + 30, cmd="connect", timeoutS=CONNECT_TIMEOUT)
        seconds = max(c["seconds"] for c in connected)
        established = sum(c["established"] for c in connected)
        failures = [c["failures"] for c in connected if c["failures"]]
        print(
            f"[many] connected {established}/{total} in {seconds:.1f} s ({established / seconds:.0f}/s), "
            f"client CPU {sum(c['cpuS'] for c in connected):.0f} s; failures {failures} "
            f"{[c['examples'] for c in connected if c['examples']]}"
        )
        slowest = sorted((s for c in connected for s in c["slowest"]), reverse=True)[:3]
        print(
            f"[many]   connect ms per client {[c['connectMs'] for c in connected]}; "
            f"slowest (s, started at s, negotiate/WebSocket/handshake s, outcome) {slowest}"
        )
        assert not failures
        assert established == total
        gauges = wait_for(
            lambda: hub_gauges(server), lambda g: g["active_connections"] == total, GAUGE_TIMEOUT
        )
        assert gauges == {"active_connections": total, "groups": 0, "stale_connections": 0}, gauges
        counted = wait_for(lambda: process_count(store, prefix), lambda c: c == [total], GAUGE_TIMEOUT)
        assert counted == [total], counted
    connect_fds = max(sampler.fds or [0])

    # 2. The idle window: nothing but the keep-alive Pings, both ways.
    idle = Sampler(pid)
    before = ask(many, "status", 30, cmd="status")
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    with idle:
        deadline = wall0 + IDLE_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            assert all(c.process.poll() is None for c in many), "a client process died"
            time.sleep(min(1.0, remaining))  # the idle window itself: a deadline, nothing to wait on
        cpu_share = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        idle_kib = idle.memory()["VmRSS"]
    # Each connection has had a Ping from the server by now, or gets it within one more interval.
    after = wait_for(
        lambda: ask(many, "status", 30, cmd="status"),
        lambda statuses: sum(s["serverPinged"] for s in statuses) >= total,
        KEEP_ALIVE,
    )
    per_connection_kib = (idle_kib - baseline_kib) / total
    pings = sum(a["pingsSent"] - b["pingsSent"] for a, b in zip(after, before, strict=True))
    server_pings = sum(a["serverPings"] - b["serverPings"] for a, b in zip(after, before, strict=True))
    print(
        f"[many] idle {IDLE_SECONDS:.0f} s: server CPU {100 * cpu_share:.1f} % of a core; RSS "
        f"{baseline_kib / 1024:.0f} MiB before the connections, {idle_kib / 1024:.0f} MiB idle: "
        f"{per_connection_kib:.1f} KiB per connection; {max(idle.fds or [0])} open files "
        f"({connect_fds} at most while connecting); {pings} Pings from the clients, {server_pings} "
        f"from the server"
    )
    assert sum(s["open"] for s in after) == total, after
    assert [s["unexpected"] for s in after] == [{}] * CLIENT_PROCESSES, after
    assert sum(s["closeMessages"] + s["pingErrors"] for s in after) == 0, after
    assert sum(s["serverPinged"] for s in after) == total, after  # the server's keep-alive reached all
    assert pings > 0
    gauges = hub_gauges(server)
    assert gauges == {"active_connections": total, "groups": 0, "stale_connections": 0}, gauges
    assert process_count(store, prefix) == [total]

    # 3. One broadcast, sent from another process, reaches every connection once.
    nonce = uuid.uuid4().hex
    for client in many:
        client.command(cmd="await", timeoutS=BROADCAST_TIMEOUT)
    sent = json.loads(site.shell(SEND.format(target=BROADCAST, nonce=nonce)).splitlines()[-1])
    delivered = [client.expect("delivered", timeout=BROADCAST_TIMEOUT + 30) for client in many]
    reached = sum(d["delivered"] for d in delivered)
    first_at = min((d["firstAt"] for d in delivered if d["firstAt"]), default=math.nan)
    last_at = max((d["lastAt"] for d in delivered if d["lastAt"]), default=math.nan)
    print(
        f"[many] broadcast: {reached}/{total} reached, the first {first_at - sent['sentAt']:.2f} s and "
        f"the last {last_at - sent['sentAt']:.2f} s after the send "
        f"(which returned in {sent['returnedAt'] - sent['sentAt']:.3f} s)"
    )
    assert reached == total, delivered
    assert sum(d["duplicates"] for d in delivered) == 0, delivered
    assert all(d["payloads"] == {nonce: d["delivered"]} for d in delivered), delivered
    assert sum(s["open"] for s in ask(many, "status", 30, cmd="status")) == total

    # 4. All leave at once; nothing is left behind, nothing was logged.
    left = ask(many, "left", LEAVE_TIMEOUT + 30, cmd="leave", timeoutS=LEAVE_TIMEOUT)
    settle_started = time.monotonic()

    unanswered: list[str] = []

    def state() -> tuple[dict[str, float], dict[str, Any], list[int]]:
        # The process is busy with 19,600 closes for about ten seconds: a scrape it cannot
        # answer within its timeout is "not settled yet", and the next poll asks again.
        try:
            gauges = hub_gauges(server)
        except OSError as exc:  # a timeout, or a connection refused or reset
            unanswered.append(repr(exc))
            gauges = {"metrics_unanswered": 1.0}
        return gauges, leftovers(store, prefix), process_count(store, prefix)

    gauges, found, counted = wait_for(
        state, lambda s: not any(s[0].values()) and is_clean(s[1]) and not any(s[2]), SETTLE_TIMEOUT
    )
    settled = time.monotonic() - settle_started
    problems = log_problems(site, server)
    killed = sum(1 for line in problems if "took too long to shut down and was killed" in line)
    print(
        f"[many] leave: {sum(x['closing'] for x in left)} closed in {max(x['seconds'] for x in left):.1f} s; "
        f"{'clean' if not any(gauges.values()) and is_clean(found) else 'NOT clean'} {settled:.1f} s later; "
        f"{len(problems)} log problems ({killed} teardowns killed by daphne); "
        f"{len(unanswered)} /metrics scrapes unanswered meanwhile"
    )
    for line in problems[:5]:
        print(f"[many]   log: {line[:300]}")
    assert all(x["timedOut"] == 0 and not x["errors"] and x["open"] == 0 for x in left), left
    assert sum(x["abnormal"] for x in left) == 0, left
    assert gauges == {"active_connections": 0, "groups": 0, "stale_connections": 0}, gauges
    assert is_clean(found), {k: v if isinstance(v, int) else v[:10] for k, v in found.items()}
    assert not any(counted), counted
    assert problems == [], problems[:20]
