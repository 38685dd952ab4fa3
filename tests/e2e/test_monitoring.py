"""The connection monitor, /metrics and a real Prometheus across real processes.

- Two daphne processes over one Redis, official JS clients on both: the monitor's figures
  (read through /metrics of either server, and through a real Prometheus scraping one) match the
  clients; counters are summed over both processes (multiprocess mode); SIGKILL one server and
  its connections leave the figures within the lease time, and the cleanup removes their state.
- A real idle client is closed by the stale cleanup: it sees the close, the figures drop.
- Without a cleanup, idle clients make /health/ degraded.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.prometheus import PrometheusServer, sample_value

from .harness import ClientProcess, Server, js_client, scrape, stop_process

pytestmark = pytest.mark.e2e

PRESENCE_TTL = 3.0


def wait_metric(
    server: Server, name: str, predicate: Callable[[float], bool], timeout: float
) -> tuple[float, float]:
    """Poll ``server``'s /metrics until ``name`` satisfies ``predicate``; returns (value, seconds)."""
    started = time.monotonic()
    value = None
    while time.monotonic() - started < timeout:
        value = scrape(server).get(name, 0.0)
        if predicate(value):
            return value, time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{name} was {value} after {timeout} s")


ACTIVE = 'conduit_active_connections{hub="tasks"}'


def connect(server: Server, token: str, count: int, clients: list[ClientProcess]) -> list[ClientProcess]:
    started = [js_client(f"{server.url}/hubs/tasks", token) for _ in range(count)]
    clients.extend(started)
    for client in started:
        client.expect("connected", timeout=20)
    return started


@pytest.fixture(scope="module")
def two_servers(make_site, tmp_path_factory):
    multiproc = Path(tmp_path_factory.mktemp("prometheus-multiproc"))
    site = make_site(
        CONDUIT_RT_PRESENCE_TTL=str(PRESENCE_TTL),
        CONDUIT_RT_CLEANUP_RUNNER="embedded",
        CONDUIT_RT_STALE_CLEANUP_INTERVAL="1",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    first, second = site.server(), site.server()
    yield site, first, second
    site.close()


def test_two_servers_one_picture_and_a_killed_server_drops_out(two_servers, clients, tmp_path):
    site, first, second = two_servers
    alice = site.token("alice")
    task_id = first.create_task(alice)
    on_first = connect(first, alice, 3, clients)
    on_second = connect(second, alice, 2, clients)
    for client in on_first + on_second:
        assert client.invoke("SubscribeToTask", task_id)["event"] == "result"

    # Both servers tell the same story: five connections, one group.
    for server in (first, second):
        wait_metric(server, ACTIVE, lambda v: v == 5, timeout=10)
        assert scrape(server)['conduit_groups{hub="tasks"}'] == 1

    # A counter is summed over both server processes (multiprocess mode): one event to the task's
    # group is written to five connections, three by the first server and two by the second.
    delivered = 'conduit_messages_delivered_total{hub="tasks",method="TaskProgress"}'
    before = scrape(first).get(delivered, 0.0)
    site.shell(
        f"from conduit_rt.demo import task_events; task_events.task_progress('{task_id}', 40, message='x')",
    )
    for client in on_first + on_second:
        client.expect("message", target="TaskProgress", timeout=10)
    wait_metric(first, delivered, lambda v: v == before + 5, timeout=10)
    assert scrape(second)[delivered] == before + 5

    with PrometheusServer([f"127.0.0.1:{first.port}"], workdir=tmp_path / "prometheus") as prometheus:
        result = prometheus.wait_for(
            "sum(conduit_active_connections)", lambda r: bool(r) and sample_value(r[0]) == 5, timeout=30
        )
        assert sample_value(result[0]) == 5

        # SIGKILL: no teardown runs; the second server's connections vanish with their leases.
        assert second.process is not None
        stop_process(second.process, signal.SIGKILL)
        _, took = wait_metric(first, ACTIVE, lambda v: v == 3, timeout=PRESENCE_TTL + 5)
        print(f"\nconnections of the killed server left the monitor after {took:.1f} s")
        assert took <= PRESENCE_TTL + 2
        # The first server's cleanup (every second) removes what they left behind.
        wait_metric(first, 'conduit_stale_connections{hub="tasks"}', lambda v: v == 0, timeout=5)
        prometheus.wait_for(
            "sum(conduit_active_connections)", lambda r: bool(r) and sample_value(r[0]) == 3, timeout=15
        )
    assert scrape(first)['conduit_groups{hub="tasks"}'] == 1


def test_the_cleanup_closes_a_real_idle_client(make_site, clients):
    site = make_site(
        CONDUIT_RT_PRESENCE_TTL=str(PRESENCE_TTL),
        CONDUIT_RT_CLEANUP_RUNNER="embedded",
        CONDUIT_RT_STALE_CLEANUP_INTERVAL="1",
        CONDUIT_RT_STALE_THRESHOLD="3",
        CONDUIT_RT_KEEP_ALIVE_INTERVAL="1",  # pings flow both ways, and do not count as activity
    )
    try:
        server = site.server()
        alice = site.token("alice")
        (idle,) = connect(server, alice, 1, clients)
        (busy,) = connect(server, alice, 1, clients)
        wait_metric(server, ACTIVE, lambda v: v == 2, timeout=10)
        deadline = time.monotonic() + 12
        while not idle.has("closed"):
            assert time.monotonic() < deadline, "the idle client was never closed"
            assert busy.invoke("Ping")["event"] == "result"  # keeps the other one busy
            time.sleep(0.5)
        closed = idle.expect("closed", timeout=1)
        assert "no messages for 3 s" in (closed["error"] or "")
        assert not busy.has("closed")
        wait_metric(server, ACTIVE, lambda v: v == 1, timeout=5)
        assert scrape(server)['conduit_stale_connections_cleaned_total{hub="tasks",reason="idle"}'] >= 1
    finally:
        site.close()


def test_a_celery_workers_counters_show_in_a_servers_metrics(two_servers):
    """Retry passes run on a Celery worker (RETRY_RUNNER=celery with a real broker): their counter
    is counted in the worker process and shows in daphne's /metrics through the shared
    multiprocess directory. Neither daphne runs a pass, so nothing else could count them."""
    site, first, _ = two_servers
    passes = 'conduit_retry_passes_total{outcome="ok"}'
    assert scrape(first).get(passes, 0.0) == 0
    site.celery_worker()
    site.celery_beat()
    wait_metric(first, passes, lambda v: v >= 2, timeout=30)


def health(server: Server, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    """``GET /health/`` → (HTTP status, JSON body), 503 included."""
    try:
        with urllib.request.urlopen(server.url + "/health/", timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_is_degraded_while_most_connections_are_stale(make_site, clients):
    """No cleanup runs here, so a real idle client stays stale: past STALE_THRESHOLD the stale
    share (1 of 1) is over HEALTH_STALE_RATIO and /health/ says degraded, with HTTP 200."""
    site = make_site(
        CONDUIT_RT_PRESENCE_TTL=str(PRESENCE_TTL),
        CONDUIT_RT_CLEANUP_RUNNER="none",
        CONDUIT_RT_STALE_THRESHOLD="2",
    )
    try:
        server = site.server()
        connect(server, site.token("alice"), 1, clients)
        wait_metric(server, ACTIVE, lambda v: v == 1, timeout=10)
        code, body = health(server)
        assert body["checks"]["stale_connections"]["status"] == "healthy", body
        deadline = time.monotonic() + 15
        while body["checks"]["stale_connections"]["status"] != "degraded":
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
            code, body = health(server)
        assert code == 200
        assert body["status"] == "degraded"
        assert scrape(server)['conduit_stale_connections{hub="tasks"}'] == 1
    finally:
        site.close()
