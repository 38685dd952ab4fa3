"""Negotiate and the WebSocket that claims its connection, with auth, origins and versions.

Negotiate has two doors (``hubs.negotiate``): the ASGI app ``http_application`` routes to before
Django, and the Django view; the tests of its answers go through both (``door``).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.core.asgi import get_asgi_application
from django.test import AsyncClient, override_settings

from hubs.routing import http_application
from hubs.send import get_hub_context
from tests.conftest import TEST_HUBS
from tests.support.hub_client import HubClient

pytestmark = [pytest.mark.django_db(transaction=True)]

DOORS = ["asgi", "django"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def request(
    door: str, method: str, path: str, headers: dict[str, str], cookies: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through ``door``: status, headers (lower-case names), body."""
    if door == "django":
        client = AsyncClient(enforce_csrf_checks=True)
        for name, value in (cookies or {}).items():
            client.cookies[name] = value
        response = await getattr(client, method.lower())(path, headers=headers)
        return response.status_code, {k.lower(): v for k, v in response.items()}, response.content
    raw = [(b"host", b"testserver")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    app = http_application(TEST_HUBS, get_asgi_application())
    communicator = HttpCommunicator(app, method, path, headers=raw)
    response = await communicator.get_response(timeout=5)
    found = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    return response["status"], found, response["body"]


async def negotiate(
    path: str = "/hubs/tasks/negotiate",
    token: str | None = None,
    *,
    door: str = "asgi",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> tuple[int, dict]:
    all_headers = {**(bearer(token) if token else {}), **(headers or {})}
    status, found, body = await request(door, "POST", path, all_headers, cookies)
    is_json = found.get("content-type", "").startswith("application/json")
    return status, (json.loads(body) if is_json else {})


@pytest.mark.parametrize("door", DOORS)
async def test_version_1_gives_a_separate_url_safe_token(door, alice_token):
    status, body = await negotiate("/hubs/tasks/negotiate?negotiateVersion=1", alice_token, door=door)
    assert status == 200
    assert body["negotiateVersion"] == 1
    assert body["connectionToken"] != body["connectionId"]
    for value in (body["connectionId"], body["connectionToken"]):
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert body["availableTransports"] == [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
    assert "ProtocolVersion" not in body and "useStatefulReconnect" not in body


@pytest.mark.parametrize("door", DOORS)
async def test_version_0_is_the_default_and_has_no_token(door, alice_token):
    status, body = await negotiate(token=alice_token, door=door)
    assert status == 200
    assert body["negotiateVersion"] == 0
    assert "connectionToken" not in body


@pytest.mark.parametrize("door", DOORS)
async def test_higher_versions_are_lowered_and_garbage_is_an_error(door, alice_token):
    assert (await negotiate("/hubs/tasks/negotiate?negotiateVersion=7", alice_token, door=door))[1][
        "negotiateVersion"
    ] == 1
    status, body = await negotiate("/hubs/tasks/negotiate?negotiateVersion=x", alice_token, door=door)
    assert status == 200 and body == {"error": "The client requested a non-integer protocol version."}


@pytest.mark.parametrize("door", DOORS)
async def test_secure_hub_negotiate_needs_authentication(door, alice):
    assert (await negotiate(door=door))[0] == 401
    assert (await negotiate(token="forged", door=door))[0] == 401


@pytest.mark.parametrize("door", DOORS)
async def test_session_authenticates_negotiate(door, alice):
    client = AsyncClient()
    await client.aforce_login(alice)
    cookies = {name: morsel.value for name, morsel in client.cookies.items()}
    # csrf-exempt: the SignalR clients send no CSRF token
    status, body = await negotiate("/hubs/tasks/negotiate?negotiateVersion=1", door=door, cookies=cookies)
    assert status == 200 and body["connectionToken"]
    status, _ = await negotiate(door=door, cookies={"sessionid": "not-a-session"})
    assert status == 401


@pytest.mark.parametrize("door", DOORS)
async def test_trailing_slash_and_get_are_not_negotiate(door, alice_token):
    assert (await negotiate("/hubs/tasks/negotiate/", alice_token, door=door))[0] == 404
    status, _, _ = await request(door, "GET", "/hubs/tasks/negotiate", bearer(alice_token))
    assert status == 405


async def test_the_asgi_door_checks_the_host_and_the_body_size(alice_token):
    app = http_application(TEST_HUBS, get_asgi_application())
    for headers, body, expected in [
        ([(b"host", b"evil.example")], b"", 400),
        ([(b"host", b"testserver")], b"x" * (64 * 1024 + 1), 413),
        ([(b"host", b"testserver")], b"{}", 200),
    ]:
        auth = [(b"authorization", f"Bearer {alice_token}".encode())]
        communicator = HttpCommunicator(
            app, "POST", "/hubs/tasks/negotiate", body=body, headers=headers + auth
        )
        assert (await communicator.get_response(timeout=5))["status"] == expected


@pytest.mark.parametrize("door", DOORS)
async def test_cors_preflight_and_origin_policy(door, alice_token):
    status, headers, _ = await request(
        door,
        "OPTIONS",
        "/hubs/tasks/negotiate",
        {"Origin": "http://testserver", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "http://testserver"
    assert headers["access-control-allow-credentials"] == "true"
    assert "x-signalr-user-agent" in headers["access-control-allow-headers"]
    status, _ = await negotiate(token=alice_token, headers={"Origin": "http://evil.example"}, door=door)
    assert status == 403
    with override_settings(CONDUIT_RT={"ALLOWED_ORIGINS": ["https://.example.com"]}):
        status, _ = await negotiate(
            token=alice_token, headers={"Origin": "https://app.example.com"}, door=door
        )
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
    # With REDIS_URL, negotiated connections live in Conduit RT's own Redis store.
    conduit = {"REDIS_URL": redis_url, "KEY_PREFIX": f"claim-race-{uuid.uuid4().hex}"}
    with override_settings(CONDUIT_RT=conduit):
        from hubs.connections import RedisNegotiated, get_negotiated

        assert isinstance(get_negotiated(), RedisNegotiated)
        await _race_for_one_token(ws_app, alice_token)


async def test_concurrent_websockets_claim_a_negotiated_token_once_redis_cache(
    ws_app, alice_token, redis_url
):
    # Without REDIS_URL, in a Django cache that Redis holds.
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
