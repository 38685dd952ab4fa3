"""No loss under faults: 20 official JS clients, 500 acknowledged events on one task group.

Every scenario runs against a real deployment: the server behind a TCP proxy that can cut
connections, a Redis of its own (append-only file on, as production should run it), PostgreSQL,
a Celery worker and Celery beat running the retry passes, and a publisher process sending the
events with ``ack=True``. The clients (``clients/acking_clients.mjs``) dedupe by ``messageId``,
process in ``seq`` order, acknowledge in batches (one ``AcknowledgeMessages`` per 100 ms), and
resume after every reconnect; an ack batch lost in a cut comes back as retries. Faults:

(a) connections cut at random while the events go out;
(b) Redis stopped for several seconds and started again;
(c) the Celery worker killed with SIGKILL and started again (with cuts, so retries are due);
(d) the server process restarted (SIGTERM, then started again on the same port).

Each client must end with all 500 events processed exactly once, in seq order; duplicates are
counted and printed (``artifacts/delivery-faults.json``), losses must be zero, and the server must
end with nothing pending, nothing spooled and no dead letters.

The matrix runs on daphne (the default server) and on uvicorn (``serve --server uvicorn``), one
deployment of each. On uvicorn it runs faults (a), (b) and (d): the server's own parts (sockets
cut under it, its event loop through a Redis outage, SIGTERM and a restart). (c) runs on daphne
only: the worker and beat do the work there, the server none that (a) does not already cover;
the whole matrix on uvicorn took 98 s more, these three take about 75 s. uvicorn's report keys
end in ``_uvicorn`` (``d_uvicorn_restart``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .chaos_proxy import ChaosProxy
from .harness import (
    CLIENTS,
    PYTHON,
    ROOT,
    SERVER_KINDS,
    ClientProcess,
    RedisServer,
    Server,
    Site,
)

pytestmark = pytest.mark.e2e

CLIENT_COUNT = 20
MESSAGES = 500
INTERVAL = 0.02  # between two published events: the run takes about 10 s, faults happen during it
ACK_WINDOW_MS = 100  # clients acknowledge in batches (AcknowledgeMessages), as bench/acked.py measures
ARTIFACTS = ROOT / "artifacts"


class Deployment:
    """Everything one scenario needs, shared by the scenarios of this module."""

    def __init__(self, site: Site, redis: RedisServer, server: Server, proxy: ChaosProxy) -> None:
        self.kind = server.kind
        self.site = site
        self.redis = redis
        self.server = server
        self.proxy = proxy
        self.worker: subprocess.Popen[Any] | None = None
        self.beat: subprocess.Popen[Any] | None = None

    def report_key(self, name: str) -> str:
        """The scenario's key in the report: daphne's as before, uvicorn's with a suffix."""
        return name if self.kind == "daphne" or self.kind in name else f"{name}_{self.kind}"

    def start_worker(self) -> None:
        self.worker = self.site.celery_worker()

    def start_beat(self) -> None:
        self.beat = self.site.celery_beat()

    def status(self) -> dict[str, int]:
        return json.loads(self.site.manage("delivery_status", timeout=60))

    def late_publications(self, task_id: str, after: float) -> int:
        """Events of the task published more than ``after`` seconds after they were persisted
        (spooled while the layer was down, then published by a retry pass)."""
        code = (
            "from datetime import timedelta; from django.db.models import F; from hubs.models import AckedMessage; "
            f"print(AckedMessage.objects.filter(body__taskId='{task_id}', "
            f"published_at__gt=F('created_at') + timedelta(seconds={after})).count())"
        )
        return int(self.site.shell(code))

    def new_task(self) -> str:
        code = (
            "from django.contrib.auth import get_user_model; from conduit_rt.demo.models import Task; "
            "print(Task.objects.create(owner=get_user_model().objects.get(username='alice')).pk)"
        )
        return self.site.shell(code)


@pytest.fixture(scope="module", params=SERVER_KINDS)
def deployment(request, make_site, postgres_url, tmp_path_factory) -> Iterator[Deployment]:
    redis = RedisServer(tmp_path_factory.mktemp("redis"), append_only=True)
    redis.start()
    site = make_site(
        redis=False,
        database_url=postgres_url,
        REDIS_URL=redis.url,
        CELERY_TASK_ALWAYS_EAGER="0",
        CONDUIT_RT_RETRY_RUNNER="celery",
        CONDUIT_RT_RETRY_INTERVAL="0.5",
        CONDUIT_RT_ACK_TIMEOUT="1",
        CONDUIT_RT_RETRY_BACKOFF="0.2",
        CONDUIT_RT_RETRY_BACKOFF_MAX="1",
        CONDUIT_RT_MAX_RETRIES="1000",
        CONDUIT_RT_PRESENCE_TTL="6",
        CONDUIT_RT_BREAKER_RESET_TIMEOUT="1",
        CONDUIT_RT_KEEP_ALIVE_INTERVAL="2",
    )
    site.token("alice")  # creates the user
    server = site.server(kind=request.param)
    proxy = ChaosProxy(server.port, seed=3)
    deployed = Deployment(site, redis, server, proxy)
    deployed.start_worker()
    deployed.start_beat()
    try:
        yield deployed
    finally:
        proxy.close()
        site.close()
        redis.stop()


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    results: dict[str, Any] = {}
    yield results
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "delivery-faults.json").write_text(json.dumps(results, indent=2))


def run_scenario(
    deployment: Deployment, name: str, report: dict[str, Any], fault: Callable[[ClientProcess], None]
) -> dict[str, Any]:
    name = deployment.report_key(name)
    task_id = deployment.new_task()
    cuts_before = deployment.proxy.cuts
    token = deployment.site.token("alice")
    config = {
        "url": f"{deployment.proxy.url}/hubs/tasks",
        "token": token,
        "taskId": task_id,
        "clients": CLIENT_COUNT,
        "events": ["TaskProgress"],
        "ackWindowMs": ACK_WINDOW_MS,
    }
    clients = ClientProcess(
        ["node", str(CLIENTS / "acking_clients.mjs"), json.dumps(config)], f"acking-{name}"
    )
    publisher: ClientProcess | None = None
    try:
        for _ in range(CLIENT_COUNT):
            clients.expect("connected", timeout=30)
        publisher = ClientProcess(
            [PYTHON, str(CLIENTS / "publisher.py"), task_id, str(MESSAGES), str(INTERVAL)],
            f"publisher-{name}",
            env=deployment.site.env,
        )
        started = time.monotonic()
        fault(publisher)
        done = publisher.expect("done", timeout=120)
        sent = done["ids"]
        final = wait_until_processed(clients, timeout=90)
        settle = time.monotonic() - started
        status = wait_for_status(deployment, timeout=60)
    finally:
        if publisher is not None:
            publisher.close()
        clients.close()

    summary = {
        "clients": CLIENT_COUNT,
        "messages": MESSAGES,
        "publish_seconds": done["seconds"],
        "all_processed_after_seconds": round(settle, 1),
        "connections_cut": deployment.proxy.cuts - cuts_before,
        "published_late": deployment.late_publications(task_id, after=1.0),
        "duplicates_total": sum(c["duplicates"] for c in final),
        "duplicates_max": max(c["duplicates"] for c in final),
        "retried_copies_total": sum(c["retried"] for c in final),
        "reconnects_total": sum(c["reconnects"] for c in final),
        "lost_total": sum(MESSAGES - len({m for _, m in c["processed"]}) for c in final),
        "server": status,
    }
    report[name] = summary
    print(f"\n[{name}] {json.dumps(summary)}")

    assert len(sent) == MESSAGES == len(set(sent))
    for client in final:
        seqs = [seq for seq, _ in client["processed"]]
        ids = [message_id for _, message_id in client["processed"]]
        assert seqs == sorted(set(seqs)), f"client {client['index']}: not in seq order"
        assert len(ids) == len(set(ids)) == MESSAGES, f"client {client['index']}: processed twice"
        assert set(ids) == set(sent), f"client {client['index']}: lost {len(set(sent) - set(ids))}"
        assert client["unrecovered"] == 0 and not client["errors"], client
    assert status == {**status, "pending": 0, "spooled": 0, "dead_letters": 0}
    return summary


def wait_until_processed(clients: ClientProcess, timeout: float) -> list[dict[str, Any]]:
    """Poll the clients until each processed every event; their full reports."""
    deadline = time.monotonic() + timeout
    while True:
        clients.command(cmd="report")
        counts = clients.expect("report", timeout=10)["clients"]
        if all(c["processed"] == MESSAGES for c in counts):
            clients.command(cmd="report", full=True)
            return clients.expect("report", timeout=10)["clients"]
        if time.monotonic() > deadline:
            short = [
                (c["index"], c["processed"], c["waiting"], c["state"])
                for c in counts
                if c["processed"] < MESSAGES
            ]
            raise AssertionError(f"clients still short of {MESSAGES} after {timeout} s: {short}")
        clients.idle(1.0)


def wait_for_status(deployment: Deployment, timeout: float) -> dict[str, int]:
    """Poll until every acknowledgement reached the server and nothing is spooled."""
    deadline = time.monotonic() + timeout
    while True:
        status = deployment.status()
        if status["pending"] == 0 and status["spooled"] == 0:
            return status
        if time.monotonic() > deadline:
            return status  # the assertion shows what is left
        time.sleep(1.0)  # polling another process's state: nothing to wait on instead


def cut_while_publishing(
    deployment: Deployment, publisher: ClientProcess, per_round: int, every: float
) -> None:
    """Cut ``per_round`` random connections every ``every`` seconds until the publisher is done."""
    while not publisher.has("done"):
        deployment.proxy.cut(per_round)
        publisher.idle(every)


def test_a_connections_cut_at_random(deployment, report):
    def fault(publisher: ClientProcess) -> None:
        publisher.expect("sent", timeout=60, index=20)
        cut_while_publishing(deployment, publisher, per_round=3, every=0.4)

    summary = run_scenario(deployment, "a_connection_cuts", report, fault)
    assert summary["connections_cut"] >= 30


def test_b_redis_stopped_and_restarted(deployment, report):
    def fault(publisher: ClientProcess) -> None:
        publisher.expect("sent", timeout=60, index=150)
        deployment.redis.stop()
        publisher.idle(4.0)  # Redis is down for these seconds: the outage is the test
        deployment.redis.start()

    summary = run_scenario(deployment, "b_redis_restart", report, fault)
    assert summary["published_late"] > 0  # the outage spooled events, published once Redis was back


@pytest.mark.parametrize("deployment", ["daphne"], indirect=True)  # the server plays no part in it
def test_c_celery_worker_killed(deployment, report):
    def fault(publisher: ClientProcess) -> None:
        publisher.expect("sent", timeout=60, index=100)
        assert deployment.worker is not None
        os.killpg(deployment.worker.pid, signal.SIGKILL)
        deployment.worker.wait(timeout=10)
        deployment.proxy.cut(CLIENT_COUNT // 2)  # retries fall due while no worker runs
        publisher.idle(3.0)  # the worker stays dead for these seconds
        deployment.start_worker()
        cut_while_publishing(deployment, publisher, per_round=2, every=0.5)

    run_scenario(deployment, "c_worker_sigkill", report, fault)


def test_d_server_restarted(deployment, report):
    def fault(publisher: ClientProcess) -> None:
        publisher.expect("sent", timeout=60, index=150)
        deployment.server.restart()

    run_scenario(deployment, f"d_{deployment.kind}_restart", report, fault)
