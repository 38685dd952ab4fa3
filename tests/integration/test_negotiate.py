"""Negotiate and the WebSocket that claims its connection, with auth, origins and versions."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, override_settings

from hubs.send import get_hub_context
from tests.support.hub_client import HubClient

pytestmark = [pytest.mark.django_db(transaction=True)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def negotiate(
    path: str = "/hubs/tasks/negotiate", token: str | None = None, **extra
) -> tuple[int, dict]:
    client = AsyncClient(enforce_csrf_checks=True)
    headers = bearer(token) if token else {}
    headers.update(extra.pop("headers", {}))
    response = await client.post(path, headers=headers, **extra)
    is_json = response.get("Content-Type", "").startswith("application/json")
    return response.status_code, (response.json() if is_json else {})


async def test_version_1_gives_a_separate_url_safe_token(alice_token):
    status, body = await negotiate("/hubs/tasks/negotiate?negotiateVersion=1", alice_token)
    assert status == 200
    assert body["negotiateVersion"] == 1
    assert body["connectionToken"] != body["connectionId"]
    for value in (body["connectionId"], body["connectionToken"]):
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert body["availableTransports"] == [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
    assert "ProtocolVersion" not in body and "useStatefulReconnect" not in body


async def test_version_0_is_the_default_and_has_no_token(alice_token):
    status, body = await negotiate(token=alice_token)
    assert status == 200
    assert body["negotiateVersion"] == 0
    assert "connectionToken" not in body


async def test_higher_versions_are_lowered_and_garbage_is_an_error(alice_token):
    assert (await negotiate("/hubs/tasks/negotiate?negotiateVersion=7", alice_token))[1][
        "negotiateVersion"
    ] == 1
    status, body = await negotiate("/hubs/tasks/negotiate?negotiateVersion=x", alice_token)
    assert status == 200 and body == {"error": "The client requested a non-integer protocol version."}


async def test_secure_hub_negotiate_needs_authentication(alice):
    assert (await negotiate())[0] == 401
    assert (await negotiate(token="forged"))[0] == 401


async def test_session_authenticates_negotiate(alice):
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(alice)
    response = await client.post("/hubs/tasks/negotiate?negotiateVersion=1")
    assert response.status_code == 200  # csrf-exempt: the SignalR clients send no CSRF token


async def test_trailing_slash_and_get_are_not_negotiate(alice_token):
    assert (await negotiate("/hubs/tasks/negotiate/", alice_token))[0] == 404
    response = await AsyncClient().get("/hubs/tasks/negotiate", headers=bearer(alice_token))
    assert response.status_code == 405


async def test_cors_preflight_and_origin_policy(alice_token):
    response = await AsyncClient().options(
        "/hubs/tasks/negotiate",
        headers={"Origin": "http://testserver", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "http://testserver"
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert "x-signalr-user-agent" in response["Access-Control-Allow-Headers"]
    status, _ = await negotiate(token=alice_token, headers={"Origin": "http://evil.example"})
    assert status == 403
    with override_settings(CONDUIT_RT={"ALLOWED_ORIGINS": ["https://.example.com"]}):
        status, _ = await negotiate(token=alice_token, headers={"Origin": "https://app.example.com"})
        assert status == 200


async def connect(ws_app, path: str, token: str | None, origin: str | None = None) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if origin:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(ws_app, path, headers=headers)


async def test_websocket_claims_the_negotiated_id_once(ws_app, alice_token, alice_task):
    _, body = await negotiate("/hubs/tasks/negotiate?negotiateVersion=1", alice_token)
    communicator = await connect(ws_app, f"/hubs/tasks?id={body['connectionToken']}", alice_token)
    client = HubClient(communicator)
    assert (await client.connect())[0]
    assert await client.handshake() == {}
    # The facade addresses this connection by the id negotiate announced.
    context = get_hub_context("conduit_rt.demo.hubs.TaskHub")
    await context.clients.connection(body["connectionId"]).asend("Direct", {"n": 1})
    assert (await client.next_event()).arguments[0]["n"] == 1
    await context.groups.aadd(body["connectionId"], f"task-{alice_task.id}", {"via": "facade"})
    await client.invoke("Ping")  # the group add is processed before this completes
    await context.clients.group(f"task-{alice_task.id}").asend("InGroup", {})
    assert (await client.next_event()).target == "InGroup"
    await client.close()

    again = await connect(ws_app, f"/hubs/tasks?id={body['connectionToken']}", alice_token)
    assert not (await again.connect(timeout=3))[0]


async def test_unknown_id_wrong_hub_and_other_user_are_refused(ws_app, alice_token, bob):
    from hubs.auth.tokens import issue_token

    assert not (await (await connect(ws_app, "/hubs/tasks?id=unknown", alice_token)).connect(timeout=3))[0]
    _, body = await negotiate("/hubs/tasks/negotiate", alice_token)
    wrong_hub = await connect(ws_app, f"/hubs/video-generation?id={body['connectionId']}", alice_token)
    assert not (await wrong_hub.connect(timeout=3))[0]
    _, body = await negotiate("/hubs/tasks/negotiate", alice_token)
    other_user = await connect(ws_app, f"/hubs/tasks?id={body['connectionId']}", issue_token(bob))
    assert not (await other_user.connect(timeout=3))[0]


async def test_browser_origins_are_checked_and_originless_clients_accepted(ws_app, alice_token):
    evil = await connect(ws_app, "/hubs/tasks", alice_token, origin="http://evil.example")
    assert not (await evil.connect(timeout=3))[0]
    same = await connect(ws_app, "/hubs/tasks", alice_token, origin="http://testserver")
    assert (await same.connect(timeout=3))[0]
    await same.disconnect()
    service = await connect(ws_app, "/hubs/tasks", alice_token)
    assert (await service.connect(timeout=3))[0]
    await service.disconnect()


async def test_unknown_websocket_path_is_refused(ws_app):
    communicator = WebsocketCommunicator(ws_app, "/nowhere")
    assert not (await communicator.connect(timeout=3))[0]


async def test_an_error_while_accepting_refuses_only_that_client(ws_app, alice_token, monkeypatch):
    from conduit_rt.demo.hubs import TaskHub

    async def broken(self, context):
        raise RuntimeError("authorize crashed")

    monkeypatch.setattr(TaskHub, "authorize", broken)
    refused = await connect(ws_app, "/hubs/tasks", alice_token)
    assert not (await refused.connect(timeout=3))[0]
    monkeypatch.undo()
    fine = await connect(ws_app, "/hubs/tasks", alice_token)
    assert (await fine.connect(timeout=3))[0]
    await fine.disconnect()


async def _race_for_one_token(ws_app, token: str, racers: int = 8) -> None:
    """``racers`` WebSockets present the same negotiated token at once: exactly one is accepted."""
    _, body = await negotiate("/hubs/tasks/negotiate?negotiateVersion=1", token)
    path = f"/hubs/tasks?id={body['connectionToken']}"
    communicators = [await connect(ws_app, path, token) for _ in range(racers)]
    outcomes = await asyncio.gather(*(c.connect(timeout=5) for c in communicators))
    accepted = [c for c, (ok, _) in zip(communicators, outcomes, strict=True) if ok]
    try:
        assert len(accepted) == 1, outcomes
        winner = HubClient(accepted[0])
        assert await winner.handshake() == {}
        assert (await winner.invoke("Ping")).error is None
        late = await connect(ws_app, path, token)
        assert not (await late.connect(timeout=3))[0]
        await late.disconnect()
    finally:
        for communicator in communicators:
            await communicator.disconnect(timeout=3)


async def test_concurrent_websockets_claim_a_negotiated_token_once_locmem(ws_app, alice_token):
    await _race_for_one_token(ws_app, alice_token)


async def test_concurrent_websockets_claim_a_negotiated_token_once_redis(ws_app, alice_token, redis_url):
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"claim-race-{uuid.uuid4().hex}",
        }
    }
    with override_settings(CACHES=caches):
        from django.core.cache import caches as handler

        assert type(handler["default"]).__name__ == "RedisCache"
        await _race_for_one_token(ws_app, alice_token)
