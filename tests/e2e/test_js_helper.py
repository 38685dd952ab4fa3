"""The JS helper (``hubs/static/conduit/conduit.mjs``) on the official client against a real daphne and
Redis: acknowledged events processed once and in order, acknowledged in batches, a handler's
failure nacked and retried, and ping quality measured and recorded by the server.

(Reconnects and resume under faults: ``test_delivery_faults.py``, whose clients are built on the
helper. The helper's pure parts: ``tests/js``.)
"""

from __future__ import annotations

import json
import time

import pytest

from .harness import CLIENTS, ClientProcess, Site, scrape

pytestmark = pytest.mark.e2e

MESSAGES = 40
HUB = 'hub="tasks"'


@pytest.fixture(scope="module")
def helper_site(make_site) -> Site:
    return make_site(
        CONDUIT_RT_PRESENCE_TTL="3",  # monitor records renewed every second
        CONDUIT_RT_ACK_TIMEOUT="2",
        CONDUIT_RT_RETRY_BACKOFF="0.2",
        CONDUIT_RT_RETRY_JITTER="false",
        CONDUIT_RT_RETRY_RUNNER="embedded",
    )


def driver(server, token: str, task_id: str, **config) -> ClientProcess:
    config = {
        "url": f"{server.url}/hubs/tasks",
        "token": token,
        "taskId": task_id,
        "events": ["TaskProgress"],
        **config,
    }
    return ClientProcess(["node", str(CLIENTS / "helper_driver.mjs"), json.dumps(config)], "helper")


def send_acked_progress(site: Site, task_id: str, count: int) -> None:
    """``count`` acknowledged TaskProgress events to the task's group, from another process."""
    site.shell(
        "from hubs.task_progress.state import task_group\n"
        "from hubs.send import get_hub_context\n"
        "import uuid\n"
        "group = get_hub_context('conduit_rt.demo.hubs.TaskHub').clients.group(task_group(uuid.UUID("
        f"{task_id!r})))\n"
        f"for i in range(1, {count} + 1):\n"
        "    group.send('TaskProgress', {'taskId': "
        f"{task_id!r}, 'progressPercentage': i, 'status': 'running'}}, ack=True)\n"
    )


def delivery_status(site: Site) -> dict[str, int]:
    return json.loads(site.manage("delivery_status"))


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
def test_acknowledged_events_are_processed_once_in_order_and_acked_in_batches(helper_site, protocol):
    site = helper_site
    server = site.server()
    token = site.token("alice")
    task_id = server.create_task(token)
    client = driver(
        server,
        token,
        task_id,
        protocol=protocol,
        ackWindowMs=100,
        pingIntervalMs=0,
        failOnce={"progressPercentage": 7},
    )
    try:
        client.expect("connected", timeout=20)
        before = scrape(server)
        send_acked_progress(site, task_id, MESSAGES)

        failed = client.expect("failed", timeout=20)
        processed = [client.expect("processed", timeout=20) for _ in range(MESSAGES)]
        deadline = time.monotonic() + 20
        while (status := delivery_status(site))["pending"] and time.monotonic() < deadline:
            time.sleep(0.2)
        client.command(cmd="report")
        report = client.expect("report", timeout=10)
        after = scrape(server)
    finally:
        client.close()

    # Every event once, in seq order; the one whose handler threw came back and was processed.
    progress = [p["progressPercentage"] for p in processed]
    retried = [p for p in processed if p["messageId"] == failed["messageId"]]
    assert sorted(progress) == list(range(1, MESSAGES + 1))
    assert len({p["messageId"] for p in processed}) == MESSAGES
    assert len(retried) == 1 and retried[0]["retryCount"] >= 1 and retried[0]["progressPercentage"] == 7
    in_order = [p["seq"] for p in processed if p["messageId"] != failed["messageId"]]
    assert in_order == sorted(in_order)
    assert all(p["requiresAck"] for p in processed)

    # The server: nothing pending, no dead letter, one nack, and the acks came in batches.
    assert status["pending"] == 0 and status["dead_letters"] == 0, status
    assert report["stats"]["nacked"] == 1 and report["stats"]["acked"] == MESSAGES, report

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    acks = delta(f'conduit_acks_total{{{HUB},result="known"}}')
    batch_frames = delta(f'conduit_hub_invocations_total{{{HUB},method="AcknowledgeMessages",outcome="ok"}}')
    single_frames = delta(f'conduit_hub_invocations_total{{{HUB},method="AcknowledgeMessage",outcome="ok"}}')
    print(
        f"\n[js-helper {protocol}] {MESSAGES} acked events: {acks:.0f} acks in {batch_frames:.0f} AcknowledgeMessages "
        f"+ {single_frames:.0f} AcknowledgeMessage frames; report {report['stats']}"
    )
    assert acks == MESSAGES
    assert delta(f'conduit_nacks_total{{{HUB},policy="retry"}}') == 1
    assert batch_frames >= 1 and batch_frames + single_frames < MESSAGES / 2


def test_ping_quality_is_measured_and_recorded_by_the_server(helper_site):
    site = helper_site
    server = site.server()
    token = site.token("bob")
    task_id = server.create_task(token)
    client = driver(server, token, task_id, pingIntervalMs=300)
    try:
        connection_id = client.expect("connected", timeout=20)["connectionId"]
        first = client.expect("quality", timeout=10)
        second = client.expect("quality", timeout=10)
        for quality in (first, second):
            assert quality["quality"] in {"good", "fair", "poor"}
            assert isinstance(quality["latencyMs"], int | float) and 0 <= quality["latencyMs"] < 5000
        # Each Ping carries the round trip of the one before: the monitor shows it.
        deadline = time.monotonic() + 15
        recorded = None
        while recorded is None and time.monotonic() < deadline:
            recorded = json.loads(
                site.shell(
                    "import asyncio, json\n"
                    "from monitoring.monitor import get_monitor\n"
                    f"record = asyncio.run(get_monitor().get({connection_id!r}))\n"
                    "print(json.dumps(record.ping_latency_ms if record else None))\n"
                )
            )
            if recorded is None:
                time.sleep(0.3)
        assert isinstance(recorded, int | float) and 0 <= recorded < 5000, recorded
    finally:
        client.close()
