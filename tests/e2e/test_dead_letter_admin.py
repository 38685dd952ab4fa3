"""The dead-letter path end to end, with a real Celery worker and beat running the retries.

An official JS client that never acknowledges receives a ``TaskCompleted`` (acknowledged by
default), then ``MAX_RETRIES`` resends with growing gaps; the message becomes a dead letter,
``manage.py dead_letters list`` shows it, a staff user finds it in the admin (headless Chromium)
and requeues it; the client receives it again, acknowledges it, and nothing is left.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest

from .harness import ROOT, js_client, run_node_script

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "artifacts"
ACK_TIMEOUT = 0.5
BACKOFF = 0.5
MAX_RETRIES = 3


def test_never_acked_to_dead_letter_to_admin_requeue_to_acked(make_site, clients):
    site = make_site(
        CELERY_TASK_ALWAYS_EAGER="0",
        CONDUIT_RT_RETRY_RUNNER="celery",
        CONDUIT_RT_RETRY_INTERVAL="0.1",
        CONDUIT_RT_ACK_TIMEOUT=str(ACK_TIMEOUT),
        CONDUIT_RT_RETRY_BACKOFF=str(BACKOFF),
        CONDUIT_RT_RETRY_BACKOFF_MAX="10",
        CONDUIT_RT_RETRY_JITTER="0",
        CONDUIT_RT_MAX_RETRIES=str(MAX_RETRIES),
    )
    site.celery_worker()
    site.celery_beat()
    token = site.token("alice")
    site.shell(
        "from django.contrib.auth import get_user_model; "
        "get_user_model().objects.create_superuser('staff', 'staff@example.com', 'staff-pw')",
    )
    task_id = site.shell(
        "from django.contrib.auth import get_user_model; from conduit_rt.demo.models import Task; "
        "print(Task.objects.create(owner=get_user_model().objects.get(username='alice')).pk)",
    )
    server = site.server()
    client = js_client(f"{server.url}/hubs/tasks", token)
    clients.append(client)
    client.expect("connected", timeout=15)
    assert client.invoke("SubscribeToTask", task_id)["event"] == "result"

    message_id = site.shell(
        f"from conduit_rt.demo import task_events; print(task_events.task_completed('{task_id}'))",
    )
    arrivals = []
    for retry in range(MAX_RETRIES + 1):
        event = client.expect("message", timeout=30, target="TaskCompleted")
        arrivals.append(time.monotonic())
        payload = event["payload"]
        assert (payload["messageId"], payload["retryCount"], payload["requiresAck"]) == (
            message_id,
            retry,
            True,
        )
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Due ACK_TIMEOUT + BACKOFF * 2**n after each send: 1.0, 1.5, 2.5 s (no jitter). The first gap
    # starts at the sender's clock, before its first publish, so it reads shorter here; the beat
    # ticks every 0.1 s.
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert abs(gaps[1] - (ACK_TIMEOUT + BACKOFF * 2)) < 0.3, gaps
    assert abs(gaps[2] - (ACK_TIMEOUT + BACKOFF * 4)) < 0.3, gaps

    listed = wait_for_dead_letter(site, message_id, timeout=30)
    assert listed.split("\t")[1:2] == ["TaskCompleted"]
    assert listed.split("\t")[4:6] == [str(MAX_RETRIES + 1), "no_ack"]

    ARTIFACTS.mkdir(exist_ok=True)
    config = {
        "url": server.url,
        "username": "staff",
        "password": "staff-pw",
        "messageId": message_id,
        "screenshots": str(ARTIFACTS),
        "timeoutMs": 30000,
    }
    result = run_node_script("admin_dead_letters.mjs", config)
    assert result.get("ok"), result
    assert result["listed"]["field-reason"] == "No acknowledgement"
    assert "Requeued 1 dead letter(s): 1 delivered to 1 live connection(s)" in result["notice"], result
    assert result["remaining"] == 0

    again = client.expect("message", timeout=15, target="TaskCompleted")["payload"]
    assert (again["messageId"], again["retryCount"]) == (message_id, MAX_RETRIES + 1)
    assert client.invoke("AcknowledgeMessage", message_id)["result"] is True
    status = json.loads(site.manage("delivery_status"))
    assert (status["pending"], status["dead_letters"], status["spooled"]) == (0, 0, 0)
    client.assert_no("message", within=ACK_TIMEOUT + BACKOFF * 2 + 0.5)  # acknowledged: no more resends


def wait_for_dead_letter(site, message_id: str, timeout: float) -> str:
    """The ``dead_letters list`` line of ``message_id``, once the worker made it a dead letter."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            line for line in site.manage("dead_letters", "list").splitlines() if line.startswith(message_id)
        ]
        if lines:
            assert len(lines) == 1, lines
            return lines[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{message_id} is no dead letter after {timeout} s")
        time.sleep(0.5)  # polling another process's database: nothing to wait on instead
