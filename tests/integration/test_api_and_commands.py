"""The task API, the demo page, and the management commands."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import AsyncClient, Client

from conduit_rt.demo.models import Task
from hubs.auth.tokens import read_token

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def no_simulation(monkeypatch):
    started: list[str] = []

    async def record(task_id: str) -> None:
        started.append(task_id)

    monkeypatch.setattr("conduit_rt.demo.views.astart_simulation", record)
    return started


def test_create_task_with_a_token_needs_no_csrf_and_no_body(alice, alice_token, no_simulation):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/tasks/", headers={"Authorization": f"Bearer {alice_token}"})
    assert response.status_code == 201
    task = Task.objects.get(pk=response.json()["taskId"])
    assert task.owner == alice and task.task_type == "video-generation"
    assert no_simulation == [str(task.pk)]


def test_create_task_with_the_session_needs_csrf(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/api/tasks/").status_code == 403
    client.get("/")  # the demo page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/api/tasks/",
        data=json.dumps({"taskType": "video-generation"}),
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 201


@pytest.mark.parametrize(("body", "status"), [("[1]", 400), ("{", 400), ('{"taskType": "laundry"}', 400)])
def test_create_task_rejects_bad_bodies(alice_token, body, status):
    response = Client().post(
        "/api/tasks/",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {alice_token}"},
    )
    assert response.status_code == status
    assert "error" in response.json()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ("[" * 100_000, 413, "The body is limited to 16384 bytes."),
        ("[" * 10_000, 400, "The body is nested too deeply."),
        ('{"taskType": ' + "[" * 5_000 + "]" * 5_000 + "}", 400, "The body is nested too deeply."),
        ("[" * 50, 400, "The body must be a JSON object."),
        (b"\xff\xfe{}", 400, "The body must be a JSON object."),
    ],
    ids=["huge", "deep", "deep-valid", "truncated", "not-utf8"],
)
async def test_create_task_answers_hostile_bodies_with_a_json_error(alice_token, body, status, error):
    response = await AsyncClient().post(
        "/api/tasks/",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {alice_token}"},
    )
    assert response.status_code == status
    assert response.json() == {"error": error}
    assert not await Task.objects.aexists()


def test_create_task_needs_authentication(db):
    assert Client().post("/api/tasks/").status_code == 401
    assert Client().post("/api/tasks/", headers={"Authorization": "Bearer forged"}).status_code == 401


def test_demo_page_needs_login_and_loads_the_official_client(alice):
    assert Client().get("/").status_code == 302
    client = Client()
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert "vendor/signalr/signalr.min.js" in page and "demo/demo.js" in page


def test_issue_token_prints_only_the_token(db):
    out = io.StringIO()
    call_command("issue_token", "carol", "--create", "--ttl", "60", stdout=out)
    token = out.getvalue().strip()
    assert "\n" not in token and read_token(token) is not None
    with pytest.raises(CommandError, match="--create"):
        call_command("issue_token", "nobody", stdout=io.StringIO())


def test_notify_task_validates_progress(db):
    with pytest.raises(CommandError, match=r"0\.\.100"):
        call_command("notify_task", "x", "--progress", "101", stdout=io.StringIO())
