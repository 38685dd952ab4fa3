"""``/health/`` through the ASGI request path (Django's async test client): each check healthy and
failing, the overall status, the HTTP code, the formats, and the time budget.

The connection monitor is a fresh ``MemoryMonitor`` per test (the real class, fed real records);
failures the monitor cannot be made to produce (a hang, an exception) use a small fake. Redis,
the channels-redis layer and the Celery broker are the real local Redis, or a closed loopback
port for the failing cases.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from celery import Celery
from django.test import AsyncClient, override_settings
from django.utils import timezone
from health_check.exceptions import ServiceUnavailable

from hubs import fanout
from hubs.delivery import breaker
from hubs.delivery.breaker import BreakerState, get_breaker
from hubs.models import DeadLetter
from hubs.records import ConnectionRecord, ServerRecord
from hubs.tally import process_identity
from monitoring import health
from monitoring.health import CeleryWorkers
from monitoring.monitor import MemoryMonitor
from tests.conftest import REDIS_DB

pytestmark = [pytest.mark.django_db(transaction=True)]

#: Short budget for the failing cases: a check that waits gives up after this many seconds.
BUDGET = 0.5
EMBEDDED_CHECKS = {"database", "channel_layer", "stale_connections", "breaker", "dead_letters"}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get_health(path: str = "/health/", **headers: str) -> tuple[int, dict[str, Any], float]:
    """GET ``path``: HTTP status, decoded JSON body, and the seconds the request took."""
    started = time.monotonic()
    response = await AsyncClient().get(path, headers=headers)
    elapsed = time.monotonic() - started
    assert response["Content-Type"] == "application/json", response.content[:200]
    return response.status_code, json.loads(response.content), elapsed


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in body["checks"].items()}


@pytest.fixture(autouse=True)
def monitor(monkeypatch) -> MemoryMonitor:
    """A fresh in-memory connection monitor read by the health checks (no records of other tests)."""
    fresh = MemoryMonitor()
    monkeypatch.setattr(health, "get_connection_monitor", lambda: fresh)
    return fresh


@pytest.fixture(autouse=True)
def fresh_breakers() -> None:
    breaker.reset_breakers()


def record(number: int, *, idle: float = 0.0) -> ConnectionRecord:
    now = time.time()
    return ConnectionRecord(
        connection_id=f"c{number}",
        hub="tasks",
        server_id="elsewhere:1:aaaaaa",
        connected_at=now - idle - 1,
        last_activity=now - idle,
    )


def server(server_id: str, state: str) -> ServerRecord:
    now = time.time()
    return ServerRecord(
        server_id=server_id, host="h", pid=1, started_at=now, last_seen=now, breaker_state=state
    )


# --- The embedded mode, the formats -------------------------------------------------------------


async def test_embedded_mode_is_healthy_in_json_without_asking():
    code, body, _ = await get_health()
    assert code == 200 and body["status"] == "healthy", body
    found = statuses(body)
    assert {name: found[name] for name in EMBEDDED_CHECKS} == dict.fromkeys(EMBEDDED_CHECKS, "healthy")
    assert found["redis"] == found["celery_workers"] == "skipped"
    assert "REDIS_URL" in body["checks"]["redis"]["message"]
    assert "EAGER" in body["checks"]["celery_workers"]["message"]
    assert body["checks"]["channel_layer"]["time_taken"] < 1.0

    code, body, _ = await get_health(accept="*/*")
    assert code == 200 and body["status"] == "healthy"


async def test_browsers_get_html_and_format_overrides_accept():
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = await AsyncClient().get("/health/", headers={"accept": browser})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert b"System status" in response.content

    code, body, _ = await get_health("/health/?format=json", accept=browser)
    assert code == 200 and body["status"] == "healthy"

    response = await AsyncClient().get("/health/", headers={"accept": "text/plain"})
    assert response["Content-Type"].startswith("text/plain") and b"Database" in response.content

    code, _, _ = await get_health(accept="not a media type")  # malformed: JSON, like no header
    assert code == 200


# --- Breaker -------------------------------------------------------------------------------------


async def test_breaker_open_in_this_process_is_degraded_with_200():
    local = get_breaker()
    for _ in range(local.failure_threshold):
        local.record_failure()
    assert local.state is BreakerState.OPEN

    code, body, _ = await get_health()
    assert code == 200 and body["status"] == "degraded", body
    assert statuses(body)["breaker"] == "degraded"
    assert "this process" in body["checks"]["breaker"]["message"]
    assert statuses(body)["database"] == "healthy"

    local.record_success()
    code, body, _ = await get_health()
    assert (code, body["status"]) == (200, "healthy")


async def test_breaker_open_in_another_process_is_degraded(monitor):
    await monitor.server_heartbeat(server("other:2:bbbbbb", "open"), ttl=30)
    await monitor.server_heartbeat(server("third:3:cccccc", "half_open"), ttl=30)

    code, body, _ = await get_health()
    assert code == 200 and body["status"] == "degraded"
    message = body["checks"]["breaker"]["message"]
    assert "other:2:bbbbbb" in message and "third" not in message and "this process" not in message


async def test_half_open_elsewhere_and_our_own_stale_record_are_not_degraded(monitor):
    await monitor.server_heartbeat(server("other:2:bbbbbb", "half_open"), ttl=30)
    # This process's record says open, but its breaker closed since: the live state wins.
    await monitor.server_heartbeat(server(process_identity().server_id, "open"), ttl=30)

    code, body, _ = await get_health()
    assert (code, body["status"]) == (200, "healthy"), body
    assert "1 other process" in body["checks"]["breaker"]["message"]


# --- Stale connections ---------------------------------------------------------------------------


async def test_stale_share_over_ten_percent_is_degraded(monitor):
    threshold = 3600.0  # STALE_THRESHOLD's default
    await monitor.upsert([record(n) for n in range(8)], ttl=30)
    await monitor.upsert([record(8, idle=threshold + 60), record(9, idle=threshold + 60)], ttl=30)

    code, body, _ = await get_health()
    assert code == 200 and body["status"] == "degraded"
    assert statuses(body)["stale_connections"] == "degraded"
    assert "2 stale connection(s) for 10 active: 20.0%" in body["checks"]["stale_connections"]["message"]

    await monitor.remove("c9", "tasks")
    await monitor.upsert([record(9), record(10)], ttl=30)  # 1 stale of 11 active: 9 %
    code, body, _ = await get_health()
    assert (code, body["status"]) == (200, "healthy"), body


async def test_exactly_ten_percent_and_no_active_connections_are_fine(monitor):
    await monitor.upsert([record(n) for n in range(9)] + [record(9, idle=7200)], ttl=30)
    code, body, _ = await get_health()
    assert (code, statuses(body)["stale_connections"]) == (200, "healthy"), body  # 10 % is not over

    dead = MemoryMonitor()
    await dead.upsert([record(1), record(2)], ttl=-1)  # leases expired: stale, not active
    assert (await dead.summary()).active == 0 and (await dead.summary()).stale == 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(health, "get_connection_monitor", lambda: dead)
        _, body, _ = await get_health()
    assert statuses(body)["stale_connections"] == "healthy"


class HangingMonitor:
    """A monitor whose Redis never answers."""

    async def summary(self) -> Any:
        await asyncio.Event().wait()

    async def servers(self) -> Any:
        await asyncio.Event().wait()


class BrokenMonitor:
    async def summary(self) -> Any:
        raise ConnectionError("monitor store refused the connection")

    async def servers(self) -> Any:
        raise ConnectionError("monitor store refused the connection")


@override_settings(CONDUIT_RT={"HEALTH_TIMEOUT": BUDGET})
async def test_a_hanging_monitor_degrades_within_the_budget(monkeypatch):
    monkeypatch.setattr(health, "get_connection_monitor", HangingMonitor)
    code, body, elapsed = await get_health()
    assert code == 200 and body["status"] == "degraded"
    assert statuses(body)["stale_connections"] == "degraded"
    assert f"within {BUDGET:g} s" in body["checks"]["stale_connections"]["message"]
    # The breaker check still judges this process's breaker, and says the rest is unknown.
    assert statuses(body)["breaker"] == "healthy"
    assert "other processes unknown" in body["checks"]["breaker"]["message"]
    assert elapsed < BUDGET + 1.0


async def test_a_failing_monitor_is_degraded(monkeypatch):
    monkeypatch.setattr(health, "get_connection_monitor", BrokenMonitor)
    code, body, _ = await get_health()
    assert code == 200 and statuses(body)["stale_connections"] == "degraded"
    assert "refused the connection" in body["checks"]["stale_connections"]["message"]


# --- Dead letters --------------------------------------------------------------------------------


def make_dead_letters(count: int, start: int = 0) -> None:
    DeadLetter.objects.bulk_create(
        DeadLetter(
            message_id=f"m{n}",
            hub="tasks",
            namespace="/hubs/tasks",
            method="TaskCompleted",
            body={"n": n},
            connection_id="c1",
            attempts=6,
            reason=DeadLetter.Reason.NO_ACK,
        )
        for n in range(start, start + count)
    )


@override_settings(CONDUIT_RT={"HEALTH_DEAD_LETTER_THRESHOLD": 3, "HEALTH_DEAD_LETTER_WINDOW": 60.0})
async def test_dead_letter_growth_over_the_threshold_is_degraded():
    await sync_to_async(make_dead_letters)(3)
    code, body, _ = await get_health()
    assert (code, statuses(body)["dead_letters"]) == (200, "healthy"), body
    assert body["checks"]["dead_letters"]["message"] == "3 dead letter(s) in the last 60 s"

    await sync_to_async(make_dead_letters)(1, start=3)
    code, body, _ = await get_health()
    assert code == 200 and body["status"] == "degraded"
    assert "4 dead letters in the last 60 s > 3" in body["checks"]["dead_letters"]["message"]

    # Older than the window: they no longer count.
    old = timezone.now() - timedelta(seconds=120)
    await DeadLetter.objects.filter(message_id__in=["m0", "m1"]).aupdate(created_at=old)
    code, body, _ = await get_health()
    assert (code, body["status"]) == (200, "healthy"), body


# --- Redis ---------------------------------------------------------------------------------------


async def test_redis_answering_is_healthy(redis_url):
    with override_settings(CONDUIT_RT={"REDIS_URL": redis_url}):
        code, body, _ = await get_health()
    assert (code, body["status"]) == (200, "healthy"), body
    assert body["checks"]["redis"]["message"] == f"PONG from 127.0.0.1:6379/{REDIS_DB}"


async def test_redis_on_a_closed_port_is_unhealthy_with_503_and_no_password_shown():
    port = closed_port()
    url = f"redis://user:s3cret@127.0.0.1:{port}/0"
    with override_settings(CONDUIT_RT={"REDIS_URL": url, "HEALTH_TIMEOUT": BUDGET}):
        code, body, elapsed = await get_health()
    assert code == 503 and body["status"] == "unhealthy", body
    assert statuses(body)["redis"] == "unhealthy"
    assert f"127.0.0.1:{port}/0" in body["checks"]["redis"]["message"]
    assert "s3cret" not in json.dumps(body)
    assert statuses(body)["database"] == "healthy"
    assert elapsed < BUDGET + 1.0


# --- Channel layer -------------------------------------------------------------------------------


def redis_layer(url: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": f"t{secrets.token_hex(4)}:layer:"},
        }
    }


class Member:
    async def dispatch(self, message: dict[str, Any]) -> None:
        pass


async def test_round_trip_on_redis_is_quick_while_the_fanout_router_reads(redis_url):
    """The process's fan-out router holds channels-redis's receive lock in a blocking read (5 s);
    the probe must still get its message at once (it shares the router's channel prefix)."""
    with override_settings(CHANNEL_LAYERS=redis_layer(redis_url)):
        code, body, _ = await get_health()
        assert (code, statuses(body)["channel_layer"]) == (200, "healthy"), body
        assert "RedisChannelLayer" in body["checks"]["channel_layer"]["message"]

        router = fanout.LocalRouter("default")
        member = Member()
        await router.add("health-probe-test", member)
        try:
            await asyncio.sleep(0.2)  # the router is inside its blocking read now
            for _ in range(3):
                code, body, _ = await get_health()
                assert (code, statuses(body)["channel_layer"]) == (200, "healthy"), body
                assert body["checks"]["channel_layer"]["time_taken"] < 1.0
        finally:
            await router.discard("health-probe-test", member)


async def test_layer_on_a_closed_port_is_unhealthy_with_503():
    layers = redis_layer(f"redis://127.0.0.1:{closed_port()}/0")
    with override_settings(CHANNEL_LAYERS=layers, CONDUIT_RT={"HEALTH_TIMEOUT": BUDGET}):
        code, body, elapsed = await get_health()
    assert code == 503 and body["status"] == "unhealthy", body
    assert statuses(body)["channel_layer"] == "unhealthy"
    assert elapsed < BUDGET + 1.0


# --- Celery workers ------------------------------------------------------------------------------


@pytest.fixture
def celery_app(monkeypatch):
    """Point the check at a Celery app of the test's choosing: ``use(broker_url)``."""
    apps: list[Celery] = []

    def use(broker_url: str) -> Celery:
        app = Celery(f"health-test-{secrets.token_hex(3)}", broker=broker_url)
        apps.append(app)
        monkeypatch.setattr(CeleryWorkers, "get_app", lambda self: app)
        return app

    yield use
    for app in apps:
        app.close()


#: Celery's Redis transport polls for ping replies in whole seconds: half of this is its wait.
CELERY_BUDGET = 1.5


@override_settings(CELERY_TASK_ALWAYS_EAGER=False, CONDUIT_RT={"HEALTH_TIMEOUT": CELERY_BUDGET})
async def test_no_worker_answering_is_degraded_not_unhealthy(celery_app, redis_url):
    celery_app(redis_url)
    code, body, elapsed = await get_health()
    assert code == 200 and body["status"] == "degraded", body
    assert statuses(body)["celery_workers"] == "degraded"
    assert body["checks"]["celery_workers"]["message"] == "No Celery worker answered within 0.75 s"
    assert elapsed < CELERY_BUDGET + 1.0


@override_settings(CELERY_TASK_ALWAYS_EAGER=False, CONDUIT_RT={"HEALTH_TIMEOUT": BUDGET})
async def test_an_unreachable_broker_is_reported_quickly(celery_app):
    celery_app(f"redis://127.0.0.1:{closed_port()}/0")
    code, body, elapsed = await get_health()
    assert code == 200 and statuses(body)["celery_workers"] == "degraded", body
    assert "broker is unreachable" in body["checks"]["celery_workers"]["message"]
    assert elapsed < BUDGET + 1.0


@override_settings(CONDUIT_RT={"HEALTH_TIMEOUT": CELERY_BUDGET})
async def test_critical_celery_check_is_unhealthy(celery_app, redis_url):
    celery_app(redis_url)
    result = await CeleryWorkers(critical=True).get_result()
    assert isinstance(result.error, ServiceUnavailable), result.error
    assert health.result_status(result) is health.Status.UNHEALTHY


def test_the_celery_check_pings_the_projects_current_app():
    """The check finds the project's Celery app through ``celery.current_app``: the library
    imports no project module (here the demo's ``conduit_rt.celery.app`` is the current one)."""
    from conduit_rt.celery import app

    app.set_current()  # as it is in a server process (other tests here create apps of their own)
    assert CeleryWorkers().get_app() is app
    other = Celery(f"health-test-{secrets.token_hex(3)}")  # created apps become the current one
    try:
        assert CeleryWorkers().get_app() is other
    finally:
        other.close()
        app.set_current()
