"""The official SignalR clients against a real server: the ASP.NET Core scenario, for each client.

Each client connects with a token, subscribes to its task, receives a TaskProgress sent by a
separate process (``manage.py notify_task``, over Redis) within 5 s, calls Ping, and sees the
errors for an unknown method, a wrong argument count and someone else's task. Every client runs
it on daphne (the default server); on uvicorn (``serve --server uvicorn``) the current JS client
in both protocols and both Python clients do.
"""

from __future__ import annotations

import pytest

from .harness import ClientProcess, Server, Site, js_client, py_client

pytestmark = pytest.mark.e2e

CLIENT_KINDS = [
    ("js", "10", "json"),
    ("js", "10", "messagepack"),
    ("js", "8", "json"),
    ("js", "6", "json"),
    ("pysignalr", None, "json"),
    ("pysignalr", None, "messagepack"),
    ("signalrcore", None, "json"),
    ("signalrcore", None, "messagepack"),
]

UVICORN_CLIENT_KINDS = [c for c in CLIENT_KINDS if c[1] in ("10", None)]
SCENARIOS = [("daphne", *c) for c in CLIENT_KINDS] + [("uvicorn", *c) for c in UVICORN_CLIENT_KINDS]


@pytest.fixture(scope="module")
def uvicorn_server(site: Site) -> Server:
    """The shared site served by uvicorn, beside the session's daphne (``server``)."""
    return site.server(kind="uvicorn")


@pytest.fixture
def served(request, server) -> Server:
    """The server of the kind the test is parametrized with (``indirect``)."""
    return server if request.param == "daphne" else request.getfixturevalue("uvicorn_server")


def start_client(
    kind: str, version: str | None, protocol: str, url: str, token: str, **options
) -> ClientProcess:
    if kind == "js":
        return js_client(url, token, client=version or "10", protocol=protocol, **options)
    return py_client(kind, url, token, protocol=protocol, **options)


@pytest.mark.parametrize(
    ("served", "kind", "version", "protocol"),
    SCENARIOS,
    ids=[f"{s}-{k}{v or ''}-{p}" for s, k, v, p in SCENARIOS],
    indirect=["served"],
)
def test_client_scenario(site, served, tokens, clients, kind, version, protocol):
    server = served
    task_id = server.create_task(tokens["alice"])
    foreign_task_id = server.create_task(tokens["bob"])
    client = start_client(kind, version, protocol, f"{server.url}/hubs/tasks", tokens["alice"])
    clients.append(client)
    client.expect("connected", timeout=15)

    subscribed = client.invoke("SubscribeToTask", task_id)
    assert subscribed["event"] == "result", subscribed
    assert subscribed["result"]["taskId"] == task_id

    site.manage("notify_task", task_id, "--progress", "50", "--message", "half way")
    event = client.expect("message", timeout=5, target="TaskProgress")
    payload = event["payload"]
    assert payload["taskId"] == task_id
    assert payload["progressPercentage"] == 50
    assert payload["message"] == "half way"
    assert payload["status"] == "running"
    assert payload["retryCount"] == 0
    assert len(payload["messageId"]) == 32
    assert payload["timestamp"].endswith("Z")

    pong = client.invoke("Ping")
    assert pong["event"] == "result" and pong["result"]["pong"] == "ok", pong

    unknown = client.invoke("NoSuchMethod")
    assert unknown["event"] == "error"
    assert "Method does not exist" in unknown["message"]

    wrong_count = client.invoke("SubscribeToTask")
    assert wrong_count["event"] == "error"
    assert "Invocation provides 0 argument(s) but target expects 1" in wrong_count["message"]

    foreign = client.invoke("SubscribeToTask", foreign_task_id)
    assert foreign["event"] == "error"
    assert "Task not found." in foreign["message"]

    # The errors ended those invocations only: the connection still serves.
    assert client.invoke("Ping")["event"] == "result"


@pytest.mark.parametrize(
    ("server_kind", "ws_ping_interval"),
    [("daphne", None), ("daphne", "1"), ("uvicorn", None), ("uvicorn", "1")],
    ids=["daphne-default", "daphne-pings", "uvicorn-default", "uvicorn-pings"],
)
def test_signalrcore_survives_idle_time_because_the_server_sends_no_protocol_pings(
    site, tokens, clients, server_kind, ws_ping_interval
):
    # signalrcore treats WebSocket ping frames as data and never answers them: with the server's
    # protocol pings on (the control case) it dies at the first one, a second into the idle time.
    args = ("--ws-ping-interval", ws_ping_interval) if ws_ping_interval else ()
    server = site.server(args=args, kind=server_kind)
    client = py_client("signalrcore", f"{server.url}/hubs/tasks", tokens["alice"])
    clients.append(client)
    client.expect("connected", timeout=15)
    client.idle(4)
    answer = client.invoke("Ping", timeout=10)
    assert answer["event"] == ("error" if ws_ping_interval else "result"), answer


def test_scenario_on_postgresql(make_site, postgres_url, clients):
    # The production database: migrations, token users, task ownership and the demo API on PostgreSQL.
    site = make_site(database_url=postgres_url)
    server = site.server()
    alice, bob = site.token("alice"), site.token("bob")
    task_id, foreign_task_id = server.create_task(alice), server.create_task(bob)
    client = js_client(f"{server.url}/hubs/tasks", alice)
    clients.append(client)
    client.expect("connected", timeout=15)
    assert client.invoke("SubscribeToTask", task_id)["result"]["taskId"] == task_id
    assert "Task not found." in client.invoke("SubscribeToTask", foreign_task_id)["message"]
    site.manage("notify_task", task_id, "--progress", "50")
    assert client.expect("message", timeout=5, target="TaskProgress")["payload"]["progressPercentage"] == 50
