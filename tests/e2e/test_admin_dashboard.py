"""The monitoring admin end to end: a real daphne site over Redis, official JS clients, headless
Chromium driving the admin as a staff user.

Three clients subscribe to a task; the task's completion (acknowledged) becomes a dead letter
for one of them (it refuses it, ``NACK_POLICY = "dead_letter"``). The staff user logs in, sees
the three clients on the dashboard (refreshed live) and in the connections list, disconnects one
(that client is closed with the administrator's message, the others stay), requeues the dead
letter (its client receives it again), and the dashboard follows. Screenshots go to
``artifacts/``.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from monitoring.dashboard import ADMIN_CLOSE_ERROR

from .harness import ROOT, js_client, run_node_script

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "artifacts"


def test_staff_sees_clients_disconnects_one_and_requeues_a_dead_letter(make_site, clients):
    site = make_site(
        CONDUIT_RT_PRESENCE_TTL="3",  # the servers report every second
        CONDUIT_RT_NACK_POLICY="dead_letter",
    )
    site.shell(
        "from django.contrib.auth import get_user_model; "
        "get_user_model().objects.create_superuser('staff', 'staff@example.com', 'staff-pw')",
    )
    server = site.server()
    alice = site.token("alice")
    task_id = server.create_task(alice)
    keeper, other = (js_client(f"{server.url}/hubs/tasks", alice) for _ in range(2))
    # Automatic reconnect on: the administrator's close (allowReconnect false) must still end it.
    doomed = js_client(f"{server.url}/hubs/tasks", alice, reconnect=[0, 200, 500])
    started = [keeper, other, doomed]
    clients.extend(started)
    ids = [client.expect("connected", timeout=20)["connectionId"] for client in started]
    for client in started:
        assert client.invoke("SubscribeToTask", task_id)["event"] == "result"

    # The completion reaches all three; two acknowledge it, the keeper refuses it: a dead letter.
    message_id = site.shell(
        f"from conduit_rt.demo import task_events; print(task_events.task_completed('{task_id}'))",
    )
    for client in started:
        assert (
            client.expect("message", timeout=15, target="TaskCompleted")["payload"]["messageId"] == message_id
        )
    for client in (other, doomed):
        assert client.invoke("AcknowledgeMessage", message_id)["result"] is True
    assert keeper.invoke("NackMessage", message_id, "not now")["event"] == "result"
    status = json.loads(site.manage("delivery_status"))
    assert (status["pending"], status["dead_letters"]) == (0, 1)

    # Anonymous: the figures endpoint sends to the login page.
    with urllib.request.urlopen(f"{server.url}/admin/monitoring/dashboard/figures/", timeout=10) as response:
        assert response.url.startswith(f"{server.url}/admin/login/")

    ARTIFACTS.mkdir(exist_ok=True)
    result = run_node_script(
        "admin_dashboard.mjs",
        {
            "url": server.url,
            "username": "staff",
            "password": "staff-pw",
            "connectionIds": ids,
            "disconnectId": ids[2],
            "messageId": message_id,
            "expectConnections": 3,
            "screenshots": str(ARTIFACTS),
            "timeoutMs": 30000,
        },
        timeout=150,
    )
    assert result.get("ok"), result
    assert result["consoleErrors"] == [], result["consoleErrors"]

    # The dashboard counted the clients, and its figures endpoint agrees.
    dashboard, figures = result["dashboard"], result["figures"]
    assert (dashboard["connections"], dashboard["groups"], dashboard["deadLetters"]) == ("3", "1", "1")
    assert (dashboard["pendingAcks"], dashboard["breakers.closed"], dashboard["breakers.open"]) == (
        "0",
        "1",
        "0",
    )
    assert (figures["connections"], figures["deadLetters"]) == (3, 1)
    assert [(s["connections"], s["breakerState"]) for s in figures["servers"]] == [(3, "closed")]
    assert sum(m["delivered"] for m in figures["minutes"]) >= 3  # the completion, to three clients
    assert result["chartBars"] == 60

    # The list showed every client; the search found the one; the action closed it, only it.
    assert sorted(result["listed"]) == sorted(ids)
    assert result["row"]["field-user"] == "alice"
    assert result["row"]["field-client"].startswith("127.0.0.1 · json")
    assert "Microsoft SignalR" in result["row"]["field-client"]  # the official client's user agent
    assert f"task-{task_id}" in result["row"]["field-groups"]
    assert result["groups"] == [{"group": f"task-{task_id}", "connections": "3"}]
    assert (result["searched"], result["counter"]) == (1, "1 of 1 selected")
    assert result["notice"] == "Disconnected 1 connection(s)."
    closed = doomed.expect("closed", timeout=10)
    assert ADMIN_CLOSE_ERROR in (closed["error"] or ""), closed
    assert not doomed.has("reconnecting")
    assert sorted(result["remaining"]) == sorted(ids[:2])
    assert not keeper.has("closed")
    assert not other.has("closed")

    # The requeued dead letter reached the keeper again; the dashboard shows it waiting for the ack.
    assert "Requeued 1 dead letter(s): 1 delivered to 1 live connection(s)" in result["requeued"], result
    again = keeper.expect("message", timeout=15, target="TaskCompleted")["payload"]
    assert again["messageId"] == message_id
    after = result["after"]
    assert (after["connections"], after["deadLetters"], after["pendingAcks"]) == ("2", "0", "1")
    assert keeper.invoke("AcknowledgeMessage", message_id)["result"] is True
    status = json.loads(site.manage("delivery_status"))
    assert (status["pending"], status["dead_letters"]) == (0, 0)

    # The disconnect is in the admin's history, by the staff user.
    logged = site.shell("from django.contrib.admin.models import LogEntry; "
        "print(*LogEntry.objects.values_list('user__username', 'object_id', 'change_message').first(), sep='|')",
    )  # fmt: skip
    assert logged == f"staff|{ids[2]}|Disconnected: {ADMIN_CLOSE_ERROR}"
    for name in (
        "admin-dashboard",
        "admin-connections",
        "admin-group-subscriptions",
        "admin-connections-disconnected",
        "admin-dashboard-dead-letter-requeued",
        "admin-dashboard-after",
    ):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name
