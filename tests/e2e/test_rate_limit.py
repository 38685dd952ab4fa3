"""RATE_LIMIT across two daphne processes over one Redis, with the official JS client: a user's
connections on both servers share one count (``RATE_LIMIT_SCOPE = "user"``), the invocation over
it waits (it is not refused, and the connection stays open) until the window lets it through, and
another user on the same server is not slowed."""

from __future__ import annotations

import time

import pytest

from .harness import js_client, scrape

pytestmark = pytest.mark.e2e


def test_a_users_connections_on_two_servers_share_one_limit(make_site, clients):
    site = make_site(CONDUIT_RT_RATE_LIMIT="4 per 3 seconds", CONDUIT_RT_RATE_LIMIT_SCOPE="user")
    first, second = site.server(), site.server()
    alice, bob = site.token("alice"), site.token("bob")
    on_first = js_client(f"{first.url}/hubs/tasks", alice)
    on_second = js_client(f"{second.url}/hubs/tasks", alice)
    bob_client = js_client(f"{second.url}/hubs/tasks", bob)
    clients.extend([on_first, on_second, bob_client])
    for client in (on_first, on_second, bob_client):
        client.expect("connected", timeout=20)

    for _ in range(4):
        assert on_first.invoke("Ping")["event"] == "result"
    started = time.monotonic()
    on_second.command(cmd="invoke", id="over", method="Ping", args=[])
    assert bob_client.invoke("Ping")["event"] == "result"  # another user: not slowed
    answer = on_second.expect("result", timeout=10, id="over")  # waited for the window, then ran
    waited = time.monotonic() - started
    print(f"\n[rate-limit] the 5th Ping of the user, on the other server, was answered after {waited:.2f} s")
    assert answer["result"]["pong"] == "ok"
    assert waited >= 0.5, "the 5th invocation was not held back"
    assert scrape(second).get('conduit_rate_limited_total{hub="tasks",outcome="delayed"}', 0) >= 1
    assert on_second.invoke("Ping")["event"] == "result"  # the connection is still open
