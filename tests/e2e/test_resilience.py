"""Reconnect, keep-alive and several processes, with real servers, Redis and official clients."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import websockets

from .harness import PYTHON, free_port, js_client, stop_process, wait_for_port

pytestmark = pytest.mark.e2e

RECONNECT_DELAYS = [0, 300, 500, 500, 500, 500, 500, 500, 500, 500, 1000, 1000, 1000, 1000, 1000]


def test_client_reconnects_after_a_server_restart_and_hears_again(site, tokens, clients):
    server = site.server()
    task_id = server.create_task(tokens["alice"])
    client = js_client(f"{server.url}/hubs/tasks", tokens["alice"], reconnect=RECONNECT_DELAYS)
    clients.append(client)
    first = client.expect("connected", timeout=15)["connectionId"]
    assert client.invoke("SubscribeToTask", task_id)["event"] == "result"

    server.restart()
    client.expect("reconnecting", timeout=10)
    second = client.expect("reconnected", timeout=20)["connectionId"]
    assert second and second != first  # a new negotiate: a new connection
    assert client.invoke("SubscribeToTask", task_id)["event"] == "result"
    site.manage("notify_task", task_id, "--progress", "70")
    assert client.expect("message", timeout=5, target="TaskProgress")["payload"]["progressPercentage"] == 70


def test_idle_connection_outlives_the_client_server_timeout(site, server, tokens, clients):
    # The shared site pings every 1 s; the client gives up after 2.5 s of silence. Idle for 6 s
    # (longer than redis-py 8's 5 s socket timeout, a trap of the Redis layer) and still connected.
    client = js_client(f"{server.url}/hubs/tasks", tokens["alice"], serverTimeoutMs=2500, keepAliveMs=1000)
    clients.append(client)
    client.expect("connected", timeout=15)
    client.assert_no("closed", within=6)
    assert client.invoke("Ping")["event"] == "result"


def test_without_keep_alive_the_client_would_time_out(site, tokens, clients):
    # The control for the test above: the same client against a server pinging every 30 s.
    server = site.server(env={"CONDUIT_RT_KEEP_ALIVE_INTERVAL": "30"})
    client = js_client(f"{server.url}/hubs/tasks", tokens["alice"], serverTimeoutMs=1500, keepAliveMs=500)
    clients.append(client)
    client.expect("connected", timeout=15)
    closed = client.expect("closed", timeout=6)
    assert "Server timeout elapsed" in closed["error"]


def test_two_servers_share_groups_over_redis(site, tokens, clients):
    fast_demo = {
        "CELERY_TASK_ALWAYS_EAGER": "1",  # the simulation runs inside server one
        "CONDUIT_DEMO_TASK_START_DELAY": "2",
        "CONDUIT_DEMO_TASK_STEPS": "3",
        "CONDUIT_DEMO_TASK_STEP_INTERVAL": "0.2",
    }
    one = site.server(env=fast_demo)
    two = site.server()
    on_one = js_client(f"{one.url}/hubs/tasks", tokens["alice"])
    on_two = js_client(f"{two.url}/hubs/video-generation", tokens["alice"], protocol="messagepack")
    clients.extend([on_one, on_two])
    on_one.expect("connected", timeout=15)
    on_two.expect("connected", timeout=15)

    task_id = one.create_task(tokens["alice"])
    for client in (on_one, on_two):
        assert client.invoke("SubscribeToTask", task_id)["event"] == "result"
    # Sent from inside daphne one: reaches the client on daphne two.
    for client in (on_one, on_two):
        client.expect("message", timeout=10, target="TaskStarted")
        completed = client.expect("message", timeout=10, target="TaskCompleted")
        assert completed["payload"]["result"]["videoUrl"].endswith(".mp4")
        assert [p["progressPercentage"] for p in client.take_messages("TaskProgress")] == [33, 67, 100]
    # Sent from a separate Python process: reaches both.
    site.manage("notify_task", task_id, "--progress", "5")
    for client in (on_one, on_two):
        assert (
            client.expect("message", timeout=5, target="TaskProgress")["payload"]["progressPercentage"] == 5
        )


def test_negotiate_on_one_server_and_connect_to_another(site, tokens):
    one, two = site.server(), site.server()
    request = urllib.request.Request(
        f"{one.url}/hubs/tasks/negotiate?negotiateVersion=1",
        method="POST",
        headers={"Authorization": f"Bearer {tokens['alice']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        negotiated = json.loads(response.read())

    async def connect() -> str:
        url = f"ws://127.0.0.1:{two.port}/hubs/tasks?id={negotiated['connectionToken']}"
        headers = {"Authorization": f"Bearer {tokens['alice']}"}
        async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
            await ws.send('{"protocol":"json","version":1}\x1e')
            return str(await asyncio.wait_for(ws.recv(), timeout=10))

    assert asyncio.run(connect()) == "{}\x1e"


def test_celery_worker_runs_the_demo_task(make_site, clients):
    demo = {
        "CONDUIT_DEMO_TASK_START_DELAY": "2",
        "CONDUIT_DEMO_TASK_STEPS": "4",
        "CONDUIT_DEMO_TASK_STEP_INTERVAL": "0.1",
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    worker_site = make_site(**demo)
    token = worker_site.token("carol")
    worker_site.celery_worker()
    server = worker_site.server()
    client = js_client(f"{server.url}/hubs/tasks", token)
    clients.append(client)
    client.expect("connected", timeout=15)
    task_id = server.create_task(token)
    assert client.invoke("SubscribeToTask", task_id)["event"] == "result"
    client.expect("message", timeout=30, target="TaskStarted")  # the worker may still be booting
    done = client.expect("message", timeout=10, target="TaskCompleted")
    assert done["payload"]["taskId"] == task_id
    assert [p["progressPercentage"] for p in client.take_messages("TaskProgress")] == [25, 50, 75, 100]


def test_port_helper_reports_dead_servers():
    import subprocess

    process = subprocess.Popen([PYTHON, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_for_port(1, 5, process)


def test_tokens_stay_out_of_the_access_log(site, tokens):
    port = free_port()
    process = site.spawn([PYTHON, "manage.py", "serve", "--port", str(port)], f"access-{port}.log")
    wait_for_port(port, 30, process)
    token = tokens["alice"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hubs/tasks/negotiate?access_token={token}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200  # the query-string token authenticated the request
    stop_process(process)
    log = (site.workdir / f"access-{port}.log").read_text()
    assert "/hubs/tasks/negotiate?access_token=***" in log
    assert token not in log


def test_resume_on_another_server_replays_from_the_redis_history(site, tokens, clients):
    one, two = site.server(), site.server()
    task_id = one.create_task(tokens["alice"])
    first = js_client(f"{one.url}/hubs/tasks", tokens["alice"], protocol="messagepack")
    clients.append(first)
    first.expect("connected", timeout=15)
    assert first.invoke("SubscribeToTask", task_id)["event"] == "result"
    site.manage("notify_task", task_id, "--progress", "10")
    seen = first.expect("message", timeout=5, target="TaskProgress")["payload"]
    assert seen["seq"] == 1
    first.close()  # the client goes away; two messages are sent meanwhile, from another process
    site.manage("notify_task", task_id, "--progress", "20")
    site.manage("notify_task", task_id, "--progress", "30")

    second = js_client(f"{two.url}/hubs/tasks", tokens["alice"])
    clients.append(second)
    second.expect("connected", timeout=15)
    answer = second.invoke("ResumeTask", task_id, 1, seen["epoch"])
    assert answer["event"] == "result", answer
    assert answer["result"]["recovered"] is True and answer["result"]["replayed"] == 2
    replayed = [second.expect("message", timeout=5, target="TaskProgress")["payload"] for _ in range(2)]
    assert [(p["seq"], p["progressPercentage"]) for p in replayed] == [(2, 20), (3, 30)]
    site.manage("notify_task", task_id, "--progress", "40")
    assert second.expect("message", timeout=5, target="TaskProgress")["payload"]["seq"] == 4
