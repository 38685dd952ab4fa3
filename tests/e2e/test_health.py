"""``/health/`` of a real deployment: daphne, a Redis of this module's own, a Celery worker.

In order: everything up → 200 and every check healthy; the worker stopped → 200, degraded; Redis
stopped → 503 with the Redis and channel-layer checks failing, answered within the time budget;
Redis back → 200 again. Every HTTP call and every wait has a deadline.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .harness import RedisServer, Server, Site, stop_process

pytestmark = pytest.mark.e2e

ALL_CHECKS = {
    "database",
    "redis",
    "channel_layer",
    "celery_workers",
    "stale_connections",
    "breaker",
    "dead_letters",
}
HEALTH_TIMEOUT = 2.0  # HEALTH_TIMEOUT's default, which the deployment keeps


class Deployment:
    def __init__(self, site: Site, redis: RedisServer, server: Server) -> None:
        self.site = site
        self.redis = redis
        self.server = server
        self.worker: subprocess.Popen[Any] | None = None

    def start_worker(self) -> None:
        self.worker = self.site.celery_worker()

    def stop_worker(self) -> None:
        if self.worker is not None:
            stop_process(self.worker)

    def health(self, timeout: float = 10) -> tuple[int, dict[str, Any], float]:
        """GET /health/: HTTP status, JSON body, seconds taken."""
        started = time.monotonic()
        try:
            with urllib.request.urlopen(self.server.url + "/health/", timeout=timeout) as response:
                code, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            code, raw = error.code, error.read()
        return code, json.loads(raw), time.monotonic() - started

    def wait_for_health(
        self, accept: Callable[[int, dict[str, Any]], bool], timeout: float
    ) -> tuple[int, dict[str, Any]]:
        """Poll /health/ until ``accept(code, body)``; fails with the last answer after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            code, body, _ = self.health()
            if accept(code, body):
                return code, body
            if time.monotonic() > deadline:
                raise AssertionError(f"/health/ not as expected after {timeout} s: {code} {body}")
            time.sleep(0.5)  # another process's state: nothing to wait on instead


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in body["checks"].items()}


def all_healthy(code: int, body: dict[str, Any]) -> bool:
    return code == 200 and statuses(body) == dict.fromkeys(ALL_CHECKS, "healthy")


@pytest.fixture(scope="module")
def deployment(make_site, tmp_path_factory) -> Iterator[Deployment]:
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    site = make_site(redis=False, REDIS_URL=redis.url, CELERY_TASK_ALWAYS_EAGER="0")
    deployed = Deployment(site, redis, site.server())
    deployed.start_worker()
    try:
        yield deployed
    finally:
        site.close()
        redis.stop()


def test_a_healthy_with_everything_up(deployment):
    code, body = deployment.wait_for_health(all_healthy, timeout=30)  # the worker takes a moment
    assert body["status"] == "healthy"
    assert body["checks"]["redis"]["message"] == f"PONG from 127.0.0.1:{deployment.redis.port}/0"
    assert "RedisChannelLayer" in body["checks"]["channel_layer"]["message"]
    assert body["checks"]["celery_workers"]["message"].endswith(" answered")

    code, body, elapsed = deployment.health()
    print(f"\n[healthy, {elapsed:.2f} s] {json.dumps(body)}")
    assert code == 200 and body["status"] == "healthy", body
    assert elapsed < 1.0, f"a healthy /health/ took {elapsed:.2f} s"


def test_b_degraded_while_no_worker_answers(deployment):
    deployment.stop_worker()
    code, body, elapsed = deployment.health()
    print(f"\n[no worker, {elapsed:.2f} s] {json.dumps(body)}")
    assert code == 200 and body["status"] == "degraded", body
    assert {k: v for k, v in statuses(body).items() if v != "healthy"} == {"celery_workers": "degraded"}
    assert body["checks"]["celery_workers"]["message"].startswith("No Celery worker answered")
    assert elapsed < HEALTH_TIMEOUT + 1.0

    deployment.start_worker()
    deployment.wait_for_health(all_healthy, timeout=30)


def test_c_unhealthy_503_with_redis_stopped_and_200_once_it_is_back(deployment):
    deployment.redis.stop()
    code, body, elapsed = deployment.health()
    print(f"\n[redis stopped, {elapsed:.2f} s] {json.dumps(body)}")
    assert code == 503 and body["status"] == "unhealthy", body
    found = statuses(body)
    assert found["redis"] == found["channel_layer"] == "unhealthy"
    assert found["database"] == found["dead_letters"] == "healthy"
    assert f"127.0.0.1:{deployment.redis.port}/0" in body["checks"]["redis"]["message"]
    assert elapsed < HEALTH_TIMEOUT + 1.5, f"/health/ took {elapsed:.2f} s with Redis down"

    deployment.redis.start()
    code, body = deployment.wait_for_health(
        lambda code, body: (
            code == 200 and statuses(body)["redis"] == statuses(body)["channel_layer"] == "healthy"
        ),
        timeout=30,
    )
    print(f"\n[redis back] {json.dumps(body)}")
    assert body["status"] in {"healthy", "degraded"}  # the worker may still be reconnecting
