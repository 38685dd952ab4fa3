"""Admission control at both doors: negotiate answers 503 with Retry-After, a WebSocket is closed
after its handshake with ``allowReconnect``; each limit counted by reason and door."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from prometheus_client import REGISTRY

from hubs.auth.tokens import issue_token
from hubs.protocol import CloseMessage
from hubs.runtime import runtime
from tests.integration.test_negotiate import request
from tests.support.clock import Clock
from tests.support.hub_client import HubClient

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def clock() -> Clock:
    found = Clock()
    runtime().loop().admission.clock = found
    return found


def refused(reason: str, door: str) -> float:
    labels = {"hub": "tasks", "reason": reason, "door": door}
    return REGISTRY.get_sample_value("conduit_admission_refused_total", labels) or 0.0


async def negotiate(token: str) -> tuple[int, dict[str, str], dict]:
    import json

    status, headers, body = await request(
        "asgi", "POST", "/hubs/tasks/negotiate?negotiateVersion=1", {"Authorization": f"Bearer {token}"}
    )
    return status, headers, json.loads(body)


async def test_negotiate_over_the_rate_answers_503_with_retry_after(alice_token, clock):
    before = refused("rate", "negotiate")
    with override_settings(CONDUIT_RT={"CONNECT_RATE": 2, "CONNECT_BURST": 2}):
        assert [(await negotiate(alice_token))[0] for _ in range(2)] == [200, 200]
        status, headers, body = await negotiate(alice_token)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert body == {"error": "The server is busy: too many connection attempts.", "retryAfter": 1}
        clock.now += 0.5  # one attempt back at 2 per second
        assert (await negotiate(alice_token))[0] == 200
    assert refused("rate", "negotiate") == before + 1


async def test_the_per_user_cap_counts_the_users_live_connections(alice, bob, alice_token, hub_client, clock):
    before = refused("user", "negotiate")
    with override_settings(CONDUIT_RT={"MAX_CONNECTIONS_PER_USER": 1}):
        first = await hub_client(token=alice_token)
        status, headers, body = await negotiate(alice_token)
        assert (status, headers["retry-after"], body["retryAfter"]) == (503, "5", 5)
        assert body["error"] == "Too many connections for this user (at most 1)."
        assert (await negotiate(issue_token(bob)))[0] == 200  # another user is not held back
        await first.close()
        assert (await negotiate(alice_token))[0] == 200  # the lease ended with the connection
    assert refused("user", "negotiate") == before + 1


async def handshake_then_close(ws_app, path: str, token: str) -> CloseMessage:
    client = HubClient(
        WebsocketCommunicator(ws_app, path, headers=[(b"authorization", f"Bearer {token}".encode())])
    )
    assert (await client.connect())[0]  # accepted, to be told why it must go
    assert await client.handshake() == {}
    close = await client.receive_skipping_pings()
    assert isinstance(close, CloseMessage)
    output = await client.communicator.receive_output(timeout=3)
    assert output["type"] == "websocket.close"
    return close


async def test_a_full_server_closes_a_negotiated_websocket_with_allow_reconnect(
    ws_app, alice, bob, alice_token, hub_client, clock
):
    before = refused("connections", "websocket")
    first = await hub_client(token=alice_token)
    with override_settings(CONDUIT_RT={"MAX_CONNECTIONS": 1, "CONNECT_RATE": 0}):
        # negotiate refuses as well; a WebSocket with a token negotiated before the server filled up:
        status, _, _ = await negotiate(issue_token(bob))
        assert status == 503
    _, _, body = await negotiate(issue_token(bob))
    with override_settings(CONDUIT_RT={"MAX_CONNECTIONS": 1}):
        close = await handshake_then_close(
            ws_app, f"/hubs/tasks?id={body['connectionToken']}", issue_token(bob)
        )
    assert close.allow_reconnect is True
    assert close.error == "The server is busy: too many connections. Retry after 5 s."
    assert refused("connections", "websocket") == before + 1
    assert (await first.invoke("Ping")).error is None  # the others are served on


async def test_a_websocket_without_negotiate_counts_as_an_attempt(ws_app, alice_token, clock):
    before = refused("rate", "websocket")
    with override_settings(CONDUIT_RT={"CONNECT_RATE": 1, "CONNECT_BURST": 1}):
        accepted = HubClient(
            WebsocketCommunicator(
                ws_app, "/hubs/tasks", headers=[(b"authorization", f"Bearer {alice_token}".encode())]
            )
        )
        assert (await accepted.connect())[0]
        assert await accepted.handshake() == {}
        close = await handshake_then_close(ws_app, "/hubs/tasks", alice_token)
        assert close.allow_reconnect and close.error.endswith("Retry after 1 s.")
        await accepted.close()
    assert refused("rate", "websocket") == before + 1


async def test_a_failing_store_makes_negotiate_a_retryable_503_not_a_500(alice_token, clock, monkeypatch):
    from hubs import connections

    async def unreachable(*args, **kwargs):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(connections, "aregister", unreachable)
    errors = {"where": "negotiate"}
    before = REGISTRY.get_sample_value("conduit_errors_total", errors) or 0.0
    status, headers, body = await negotiate(alice_token)
    assert (status, headers["retry-after"]) == (503, "5")
    assert body == {"error": "The server cannot take connections right now.", "retryAfter": 5}
    assert REGISTRY.get_sample_value("conduit_errors_total", errors) == before + 1


async def test_an_unreadable_registry_lets_the_attempt_through(alice_token, clock, fresh_delivery_stores):
    class Broken:
        async def resolve_alive(self, channels):
            raise ConnectionError("Redis is down")

    runtime().swap_store("members", Broken())
    errors = {"where": "admission"}
    before = REGISTRY.get_sample_value("conduit_errors_total", errors) or 0.0
    with override_settings(CONDUIT_RT={"MAX_CONNECTIONS_PER_USER": 1}):
        assert (await negotiate(alice_token))[0] == 200
    assert REGISTRY.get_sample_value("conduit_errors_total", errors) == before + 1
