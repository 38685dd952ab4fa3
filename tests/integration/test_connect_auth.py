"""Who a WebSocket connects as: the token's user (kept ``USER_CACHE_TTL`` seconds, no session
read), else the Django session's, without Channels' ``AuthMiddlewareStack``."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, override_settings

from hubs.auth import resolve
from hubs.auth.tokens import validate_signed_token
from hubs.auth.users import RecentUsers
from hubs.runtime import runtime
from tests.support.clock import Clock
from tests.support.hub_client import HubClient

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def clock(monkeypatch) -> Clock:
    found = Clock()
    monkeypatch.setattr(runtime(), "recent_users", RecentUsers(clock=found))
    return found


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The user keys the signed-token validator loaded from the database (one by one, or in
    the loop's batches)."""
    seen: list[str] = []
    original, original_many = type(validate_signed_token).load_user, type(validate_signed_token).load_users

    def counting(self, user_pk):
        seen.append(user_pk)
        return original(self, user_pk)

    def counting_many(self, user_pks):
        seen.extend(user_pks)
        return original_many(self, user_pks)

    monkeypatch.setattr(type(validate_signed_token), "load_user", counting)
    monkeypatch.setattr(type(validate_signed_token), "load_users", counting_many)
    return seen


async def open_socket(ws_app, headers: list[tuple[bytes, bytes]]) -> tuple[bool, HubClient]:
    client = HubClient(
        WebsocketCommunicator(ws_app, "/hubs/tasks", headers=[(b"host", b"testserver"), *headers])
    )
    accepted, _ = await client.connect()
    return accepted, client


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


async def test_a_token_user_is_loaded_once_per_ttl_and_no_session_is_read(
    ws_app, alice, alice_token, clock, loads, monkeypatch
):
    async def no_session(session_key):
        raise AssertionError("a token client must not load a session")

    monkeypatch.setattr("hubs.accept.asession_user", no_session)
    for _ in range(3):
        accepted, client = await open_socket(ws_app, bearer(alice_token))
        assert accepted
        assert await client.handshake() == {}
        await client.close()
    assert loads == [str(alice.pk)]
    clock.now += 30.0  # USER_CACHE_TTL
    accepted, client = await open_socket(ws_app, bearer(alice_token))
    assert accepted
    await client.communicator.disconnect()
    assert loads == [str(alice.pk)] * 2


async def test_a_deactivated_user_is_refused_once_the_ttl_ran_out(ws_app, alice, alice_token, clock):
    accepted, client = await open_socket(ws_app, bearer(alice_token))
    assert accepted
    await client.communicator.disconnect()
    alice.is_active = False
    await database_sync_to_async(alice.save)()
    clock.now += 29.0
    accepted, client = await open_socket(ws_app, bearer(alice_token))
    assert accepted  # within the documented bound
    await client.communicator.disconnect()
    clock.now += 1.0
    accepted, _ = await open_socket(ws_app, bearer(alice_token))
    assert not accepted


async def test_ttl_zero_loads_the_user_every_time(ws_app, alice, alice_token, clock, loads):
    with override_settings(CONDUIT_RT={"USER_CACHE_TTL": 0}):
        for _ in range(2):
            accepted, client = await open_socket(ws_app, bearer(alice_token))
            assert accepted
            await client.communicator.disconnect()
    assert loads == [str(alice.pk)] * 2


async def test_a_forged_or_expired_token_is_refused_whatever_is_cached(ws_app, alice, alice_token, clock):
    from hubs.auth.tokens import issue_token

    accepted, client = await open_socket(ws_app, bearer(alice_token))
    assert accepted
    await client.communicator.disconnect()
    expired = issue_token(alice, ttl=-1)
    assert not (await open_socket(ws_app, bearer(expired)))[0]
    assert not (await open_socket(ws_app, bearer(alice_token[:-2] + "xx")))[0]


async def test_the_session_cookie_authenticates_a_websocket(ws_app, alice, clock):
    browser = AsyncClient()
    await browser.aforce_login(alice)
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in browser.cookies.items())
    accepted, client = await open_socket(ws_app, [(b"cookie", cookie.encode())])
    assert accepted  # the task hub is a SecureHub: only a user gets in
    assert await client.handshake() == {}
    await client.close()
    # Logged out: refused once the session's cached user expired (the task hub needs a user).
    await browser.alogout()
    clock.now += 30.0
    assert not (await open_socket(ws_app, [(b"cookie", cookie.encode())]))[0]


async def test_an_outer_auth_middleware_user_is_taken_as_it_is(alice, clock):
    from channels.auth import AuthMiddlewareStack

    from hubs.routing import websocket_application
    from tests.conftest import TEST_HUBS

    browser = AsyncClient()
    await browser.aforce_login(alice)
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in browser.cookies.items())
    app = AuthMiddlewareStack(websocket_application(TEST_HUBS))
    accepted, client = await open_socket(app, [(b"cookie", cookie.encode())])
    assert accepted
    await client.communicator.disconnect()


async def test_auser_from_token_runs_one_step_validators_in_a_thread(alice, clock):
    from django.contrib.auth import get_user_model

    def by_username(token):
        return get_user_model().objects.filter(username=token).first()  # the ORM: needs the thread

    with override_settings(CONDUIT_RT={"TOKEN_VALIDATORS": [by_username]}):
        assert (await resolve.auser_from_token("alice")).pk == alice.pk
        with pytest.raises(resolve.InvalidToken):
            await resolve.auser_from_token("nobody")


async def test_the_users_of_a_connect_storm_are_loaded_together(alice, bob, clock, monkeypatch):
    from hubs.auth.tokens import issue_token

    calls: list[list[str]] = []
    original = type(validate_signed_token).load_users

    def counting_many(self, user_pks):
        calls.append(sorted(user_pks))
        return original(self, user_pks)

    monkeypatch.setattr(type(validate_signed_token), "load_users", counting_many)
    tokens = [issue_token(alice), issue_token(bob)] * 5 + ["not a token"]
    found = await asyncio.wait_for(
        asyncio.gather(*(resolve.auser_from_token(t) for t in tokens), return_exceptions=True), timeout=10
    )
    assert calls == [sorted([str(alice.pk), str(bob.pk)])]  # ten connects, one query
    assert [u.pk for u in found[:10]] == [alice.pk, bob.pk] * 5
    assert isinstance(found[10], resolve.InvalidToken)


async def test_a_batch_leaves_out_inactive_unknown_and_malformed_keys(alice, bob):
    bob.is_active = False
    await database_sync_to_async(bob.save)()
    found = await database_sync_to_async(validate_signed_token.load_users)(
        [str(alice.pk), str(bob.pk), "999999", "not a pk"]
    )
    assert found == {str(alice.pk): alice}
