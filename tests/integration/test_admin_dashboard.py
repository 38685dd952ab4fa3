"""The monitoring admin: who may see what, the lists read from the connection monitor, the
disconnect action closing a real hub connection, and the dashboard's figures (memory and Redis)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import AsyncClient, Client
from prometheus_client import REGISTRY

from hubs.delivery.pending import get_pending
from hubs.models import DeadLetter
from hubs.protocol import CloseMessage
from hubs.records import ConnectionRecord
from hubs.runtime import local_connections
from monitoring.dashboard import ADMIN_CLOSE_ERROR
from monitoring.monitor import get_monitor
from tests.support.delivery import delivery_settings

pytestmark = [pytest.mark.django_db(transaction=True)]

CONNECTIONS = "/admin/monitoring/connection/"
GROUPS = "/admin/monitoring/groupsubscription/"
DASHBOARD = "/admin/monitoring/dashboard/"
FIGURES = "/admin/monitoring/dashboard/figures/"
PAGES = (CONNECTIONS, GROUPS, DASHBOARD, FIGURES)
VIEW_PERMISSIONS = ("view_connection", "view_groupsubscription", "view_dashboard")


@pytest.fixture(params=["memory", "redis"])
async def stores(request, fresh_delivery_stores):
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with delivery_settings(redis_url) as conf:
        yield conf


@pytest.fixture
def memory_stores(fresh_delivery_stores):
    """The embedded stores (this process's memory), empty."""


def make_staff(username: str, *permissions: str, superuser: bool = False):
    user = get_user_model().objects.create_user(
        username, password="pw", is_staff=True, is_superuser=superuser
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="monitoring", codename__in=permissions)
    )
    return user


@pytest.fixture
def admin_user(db):
    return make_staff("root", superuser=True)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def record(connection_id: str, **fields) -> ConnectionRecord:
    now = time.time()
    defaults = {
        "hub": "tasks",
        "server_id": "host:1:abc",
        "user_id": "1",
        "username": "alice",
        "remote_address": "10.0.0.1",
        "protocol": "json",
        "user_agent": "Microsoft SignalR/10.0 (10.0.11; Unknown OS; NodeJS; v20)",
        "connected_at": now - 120,
        "last_activity": now - 30,
        "messages_in": 3,
        "messages_out": 7,
        "ping_latency_ms": 12.5,
    }
    return ConnectionRecord(connection_id=connection_id, **{**defaults, **fields})


async def put_records(*records: ConnectionRecord) -> None:
    await get_monitor().upsert(list(records), ttl=60)


def ids_in(html: str, *candidates: str) -> set[str]:
    return {c for c in candidates if f'data-connection-id="{c}"' in html}


# --------------------------------------------------------------------------------- access


def test_anonymous_and_non_staff_users_are_sent_to_the_login(memory_stores, make_user):
    plain = make_user("plain")
    for client in (Client(), logged_in(plain)):
        for page in PAGES:
            response = client.get(page)
            assert response.status_code == 302, page
            assert response["Location"].startswith(f"/admin/login/?next={page}"), page
    assert Client().post(CONNECTIONS, {"action": "disconnect_connections"}).status_code == 302


def test_staff_needs_the_view_permissions(memory_stores):
    bare = logged_in(make_staff("bare"))
    for page in PAGES:
        assert bare.get(page).status_code == 403, page
    assert "/admin/monitoring/" not in bare.get("/admin/").content.decode()

    viewer = logged_in(make_staff("viewer", *VIEW_PERMISSIONS))
    for page in PAGES:
        assert viewer.get(page).status_code == 200, page
    index = viewer.get("/admin/").content.decode()
    for page in (CONNECTIONS, GROUPS, DASHBOARD):
        assert f'href="{page}"' in index
    assert "/admin/monitoring/connection/add/" not in index  # nothing to add, change or delete


def test_only_the_disconnect_permission_offers_and_runs_the_action(memory_stores):
    async_to_sync(put_records)(record("c1"))
    viewer = logged_in(make_staff("viewer", *VIEW_PERMISSIONS))
    page = viewer.get(CONNECTIONS).content.decode()
    assert ids_in(page, "c1") == {"c1"}
    assert "disconnect_connections" not in page
    refused = viewer.post(CONNECTIONS, {"action": "disconnect_connections", "_selected_action": ["c1"]})
    assert refused.status_code == 403

    operator = logged_in(make_staff("operator", *VIEW_PERMISSIONS, "disconnect_connection"))
    assert "Disconnect selected connections" in operator.get(CONNECTIONS).content.decode()
    assert (
        logged_in(make_staff("nothing")).post(CONNECTIONS, {"action": "disconnect_connections"}).status_code
        == 403
    )


# ---------------------------------------------------------------------------------- lists


async def test_the_connections_list_shows_filters_and_searches_the_monitor(stores, admin_user):
    now = time.time()
    await put_records(
        record("conn-a", connected_at=now - 300, messages_in=3, groups={"task-1": {"taskId": "1"}, "room": {}}),
        record(
            "conn-b", connected_at=now - 200, messages_in=9, user_id="2", username="bob",
            remote_address="10.0.0.2", groups={"task-1": {"taskId": "1"}},
        ),
        record(
            "conn-c", connected_at=now - 100, messages_in=1, hub="video-generation", user_id=None,
            username=None, user_agent="Firefox/140",
        ),
    )  # fmt: skip
    client = AsyncClient()
    await client.aforce_login(admin_user)

    async def shown(query: str = "") -> set[str]:
        response = await client.get(CONNECTIONS + query)
        assert response.status_code == 200
        return ids_in(response.content.decode(), "conn-a", "conn-b", "conn-c")

    async def order(query: str) -> list[str]:
        html = (await client.get(CONNECTIONS + query)).content.decode()
        return re.findall(r'data-connection-id="([^"]+)"', html)

    response = await client.get(CONNECTIONS)
    page = response.content.decode()
    assert ids_in(page, "conn-a", "conn-b", "conn-c") == {"conn-a", "conn-b", "conn-c"}
    for cell in ("alice", "bob", "Anonymous", "10.0.0.2", "Firefox/140", "host:1:abc", "12.5 ms", "30 s"):
        assert cell in page, cell
    assert "{&quot;taskId&quot;: &quot;1&quot;}" in page  # the group's join metadata
    assert "Disconnect selected connections" in page
    assert 'name="csrfmiddlewaretoken"' in page
    # The filter sidebar offers each hub, user and group with its count.
    for choice in (
        "tasks (2)",
        "video-generation (1)",
        "alice (1)",
        "Anonymous (1)",
        "task-1 (2)",
        "room (1)",
    ):
        assert choice in page, choice

    assert await shown("?hub=video-generation") == {"conn-c"}
    assert await shown("?user=2") == {"conn-b"}
    assert await shown("?user=-") == {"conn-c"}
    assert await shown("?group=task-1") == {"conn-a", "conn-b"}
    assert await shown("?group=task-1&user=1") == {"conn-a"}
    assert await shown("?q=firefox") == {"conn-c"}  # user agent, any case
    assert await shown("?q=10.0.0.2") == {"conn-b"}  # remote address
    assert await shown("?q=room") == {"conn-a"}  # group name
    assert await shown("?q=conn-b") == {"conn-b"}  # connection id
    assert await shown("?q=alice+task-1") == {"conn-a"}  # every word must match
    assert await shown("?q=nobody") == set()
    assert "No open connection matches." in (await client.get(CONNECTIONS + "?q=nobody")).content.decode()
    # Sorting: newest first by default; by a column either way; an unknown key is ignored.
    for query, expected in (
        ("", ["conn-c", "conn-b", "conn-a"]),
        ("?o=connected", ["conn-a", "conn-b", "conn-c"]),
        ("?o=in", ["conn-c", "conn-a", "conn-b"]),
        ("?o=-in", ["conn-b", "conn-a", "conn-c"]),
        ("?o=secret", ["conn-c", "conn-b", "conn-a"]),
    ):
        assert await order(query) == expected, query


async def test_the_group_subscriptions_list_links_to_its_connections(stores, admin_user):
    await put_records(
        record("conn-a", groups={"task-1": {"taskId": "1"}}),
        record(
            "conn-b", user_id="2", username="bob", groups={"task-1": {"taskId": "1"}, "room": {"seat": 4}}
        ),
        record("conn-c", hub="video-generation", groups={"task-1": {}}),
    )
    client = AsyncClient()
    await client.aforce_login(admin_user)
    page = (await client.get(GROUPS)).content.decode()
    assert page.count('data-group="task-1"') == 2  # one row per (hub, group)
    assert 'data-group="room"' in page
    assert "alice, bob" in page
    assert "{&quot;seat&quot;: 4}" in page
    assert 'href="/admin/monitoring/connection/?hub=tasks&amp;group=task-1">2</a>' in page

    only_video = (await client.get(GROUPS + "?hub=video-generation")).content.decode()
    assert only_video.count('data-group="task-1"') == 1
    assert 'data-group="room"' not in only_video
    searched = (await client.get(GROUPS + "?q=roo")).content.decode()
    assert 'data-group="room"' in searched
    assert 'data-group="task-1"' not in searched


# ---------------------------------------------------------------------------- disconnecting


async def test_disconnect_closes_a_real_connection_and_is_recorded(
    stores, hub_client, alice_token, admin_user
):
    doomed = await hub_client("/hubs/tasks", token=alice_token)
    assert (await doomed.invoke("Ping")).error is None  # the handshake's record is written
    (doomed_id,) = [r.connection_id for r in await get_monitor().connections()]
    keeper = await hub_client("/hubs/tasks", token=alice_token)
    assert (await keeper.invoke("Ping")).error is None
    (keeper_id,) = [
        r.connection_id for r in await get_monitor().connections() if r.connection_id != doomed_id
    ]
    ids = [doomed_id, keeper_id]
    http = AsyncClient()
    await http.aforce_login(admin_user)

    listed = (await http.get(CONNECTIONS)).content.decode()
    assert ids_in(listed, *ids) == set(ids)
    response = await http.post(
        CONNECTIONS + "?hub=tasks",
        {"action": "disconnect_connections", "_selected_action": [doomed_id, "gone-already"], "index": "0"},
    )
    assert response.status_code == 302
    assert response["Location"] == CONNECTIONS + "?hub=tasks"

    close = await doomed.receive_skipping_pings()
    assert isinstance(close, CloseMessage)
    assert (close.error, close.allow_reconnect) == (ADMIN_CLOSE_ERROR, False)
    frame = await doomed.communicator.receive_output(timeout=3)
    assert frame["type"] == "websocket.close"
    await doomed.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await doomed.communicator.wait(timeout=3)
    assert await keeper.nothing_more()

    page = (await http.get(response["Location"])).content.decode()
    assert "Disconnected 1 connection(s). 1 were no longer open." in page
    assert [r.connection_id for r in await get_monitor().connections()] == [keeper_id]
    entry = await sync_to_async(LogEntry.objects.select_related("content_type").get)(object_id=doomed_id)
    assert (entry.user_id, entry.action_flag) == (admin_user.pk, CHANGE)
    assert ADMIN_CLOSE_ERROR in entry.change_message
    # The history links to the list, searched for that connection.
    assert entry.get_admin_url() == f"{CONNECTIONS}{quote(doomed_id)}/change/"
    found = await http.get(entry.get_admin_url())
    assert found["Location"] == f"{CONNECTIONS}?q={doomed_id}"
    assert (await http.get(f"{CONNECTIONS}a_5Fb/change/"))["Location"] == f"{CONNECTIONS}?q=a_b"


async def test_disconnect_without_a_selection_changes_nothing(stores, admin_user):
    await put_records(record("conn-a"))
    http = AsyncClient()
    await http.aforce_login(admin_user)
    response = await http.post(CONNECTIONS, {"action": "disconnect_connections"}, follow=True)
    assert "Items must be selected" in response.content.decode()
    assert [r.connection_id for r in await get_monitor().connections()] == ["conn-a"]
    assert not await sync_to_async(LogEntry.objects.exists)()


# ------------------------------------------------------------------------------- dashboard


async def test_the_figures_endpoint_reports_the_shared_state(
    stores, hub_client, alice_token, alice_task, admin_user
):
    client = await hub_client("/hubs/tasks", token=alice_token)
    assert (await client.invoke("SubscribeToTask", str(alice_task.id))).error is None
    (connection,) = await get_monitor().connections()
    await put_records(record("other", hub="video-generation"))
    await get_pending().register("m-1", {connection.connection_id: None}, due=time.time() + 60)
    await sync_to_async(DeadLetter.objects.create)(
        message_id="m-0", hub="tasks", namespace="tasks", method="TaskCompleted", body={},
        connection_id="gone", attempts=4, reason=DeadLetter.Reason.NO_ACK,
    )  # fmt: skip
    await get_monitor().count_minute(delivered=5, failed=2)
    await local_connections().renew()  # writes this process's record (what the presence loop does)

    http = AsyncClient()
    await http.aforce_login(admin_user)
    response = await http.get(FIGURES)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    figures = json.loads(response.content)
    assert (figures["connections"], figures["groups"]) == (2, 1)
    assert {h["hub"]: h["connections"] for h in figures["hubs"]} == {"tasks": 1, "video-generation": 1}
    assert (figures["pendingAcks"], figures["deadLetters"]) == (1, 1)
    minutes = figures["minutes"]
    assert len(minutes) == 60
    # Counted in this minute, or in the previous one if it turned meanwhile (this process's
    # earlier deliveries may add to it: the renewal handed its whole tally over).
    assert figures["deliveredThisMinute"] + figures["deliveredLastMinute"] >= 5
    assert figures["failedThisMinute"] + figures["failedLastMinute"] >= 2
    assert (minutes[-1]["delivered"], minutes[-2]["delivered"]) == (
        figures["deliveredThisMinute"],
        figures["deliveredLastMinute"],
    )
    assert minutes[-1]["start"] == _minute_start(time.time()) or minutes[-2]["start"] == _minute_start(
        time.time() - 60
    )
    assert figures["breakers"]["closed"] >= 1
    assert figures["breakers"]["open"] == 0
    (me,) = [s for s in figures["servers"] if s["thisProcess"]]
    assert (me["connections"], me["breakerState"]) == (1, "closed")

    page = await http.get(DASHBOARD)
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-figures-url="/admin/monitoring/dashboard/figures/"' in html
    assert 'id="figure-connections">2<' in html
    assert 'id="figure-dead-letters">1<' in html
    assert "monitoring/dashboard.js" in html
    assert 'href="/admin/hubs/deadletter/"' in html
    assert json.loads(_json_script(html, "monitoring-figures"))["connections"] == 2


def _minute_start(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch // 60) * 60, tz=UTC).isoformat()


def _json_script(html: str, element_id: str) -> str:
    start = html.index(f'<script id="{element_id}" type="application/json">') + len(
        f'<script id="{element_id}" type="application/json">'
    )
    return html[start : html.index("</script>", start)]


def test_the_figures_say_so_when_the_monitor_cannot_be_read(memory_stores, admin_user, monkeypatch):
    async def broken() -> None:
        raise ConnectionError("Redis is down")

    monkeypatch.setattr("monitoring.dashboard.read_state", broken)
    errors = "conduit_errors_total"
    before = REGISTRY.get_sample_value(errors, {"where": "admin_dashboard"}) or 0.0
    client = logged_in(admin_user)
    response = client.get(FIGURES)
    assert response.status_code == 503
    assert "could not be read" in response.json()["error"]
    assert (
        REGISTRY.get_sample_value(errors, {"where": "admin_dashboard"}) == before + 1
    )  # counted, and logged
    page = client.get(DASHBOARD)
    assert page.status_code == 200
    assert "could not be read" in page.content.decode()
