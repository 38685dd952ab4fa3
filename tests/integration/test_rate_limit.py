"""RATE_LIMIT on hub invocations, through the hub, on memory and on real Redis: over the limit an
invocation waits in the connection's queue, a full queue refuses with an error for that client
only, other clients are not affected, acks are never limited, streams over the limit are refused,
and a failing limit storage lets invocations through (logged and counted)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis
from django.test import override_settings
from prometheus_client import REGISTRY

from hubs import rate_limit
from hubs.auth.tokens import issue_token
from hubs.metrics import hub_metrics
from hubs.protocol import InvocationMessage, StreamInvocationMessage
from hubs.runtime import get_limiter, runtime

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=["memory", "redis"])
async def limited(request):
    """A tight limit (3 an hour, a queue of 2) on memory or on Redis under a fresh key prefix."""
    conf = {"RATE_LIMIT": "3/hour", "MAX_PENDING_INVOCATIONS": 2}
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        conf.update(REDIS_URL=redis_url, KEY_PREFIX=f"t{secrets.token_hex(4)}")
    with override_settings(CONDUIT_RT=conf):
        yield conf
    if redis_url:
        client = aioredis.Redis.from_url(redis_url)
        keys = await client.keys(f"{conf['KEY_PREFIX']}:*")
        assert keys, "the limit was counted in Redis"
        await client.delete(*keys)
        await client.aclose()


def sample(name: str, **labels: str) -> float:
    hub_metrics()  # registered
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counted(outcome: str, hub: str = "tasks") -> float:
    return sample("conduit_rate_limited_total", hub=hub, outcome=outcome)


async def test_over_the_limit_invocations_wait_then_a_full_queue_refuses(
    limited, hub_client, alice_token, bob
):
    delayed, refused = counted("delayed"), counted("refused")
    alice = await hub_client("/hubs/tasks", token=alice_token)
    bob_client = await hub_client("/hubs/tasks", token=issue_token(bob))
    for _ in range(3):
        assert (await alice.invoke("Ping")).error is None

    # Four more in one frame: two fit the queue (the first of them then waits in the worker for
    # the window), the other two are refused.
    await alice.send(
        *(InvocationMessage(target="Ping", arguments=[], invocation_id=f"w{i}") for i in range(4))
    )
    refusals = [await alice.receive_skipping_pings() for _ in range(2)]
    assert [r.invocation_id for r in refusals] == ["w2", "w3"]
    assert {r.error for r in refusals} == {"Failed to invoke 'Ping': too many pending invocations."}
    assert await alice.nothing_more(0.3)  # the waiting ones have no answer yet
    assert counted("delayed") == delayed + 1 and counted("refused") == refused + 2

    # Another client is not affected; acks are never limited.
    assert (await bob_client.invoke("Ping")).error is None
    assert (await alice.invoke("AcknowledgeMessage", "no-such-id")).result is False


async def test_held_invocations_run_once_the_window_lets_them(hub_client, alice_token):
    with override_settings(CONDUIT_RT={"RATE_LIMIT": "2/second"}):
        alice = await hub_client("/hubs/tasks", token=alice_token)
        await alice.send(
            *(InvocationMessage(target="Ping", arguments=[], invocation_id=f"p{i}") for i in range(4))
        )
        answers = [await alice.receive_skipping_pings(timeout=10) for _ in range(4)]
    assert [a.invocation_id for a in answers] == ["p0", "p1", "p2", "p3"]  # in order, none refused
    assert all(a.error is None for a in answers)


async def test_a_stream_over_the_limit_is_refused(limited, hub_client, alice_token):
    alice = await hub_client("/hubs/echo", token=alice_token)
    for _ in range(3):
        await alice.invoke("Echo", 1)
    await alice.send(StreamInvocationMessage(target="Count", arguments=[1], invocation_id="s1"))
    answer = await alice.receive_skipping_pings()
    assert answer.invocation_id == "s1"
    assert answer.error.startswith("Failed to invoke 'Count': rate limit exceeded; retry in ")
    assert counted("stream_refused", hub="echo") >= 1


async def test_a_failing_limit_storage_lets_invocations_through_and_is_counted(hub_client, alice_token):
    class Broken:
        async def try_acquire(self, *identifiers: str) -> float:
            raise ConnectionError("redis went away")

    runtime().loop().swap_limiter(Broken())
    try:
        errors = sample("conduit_errors_total", where="rate_limit")
        alice = await hub_client("/hubs/tasks", token=alice_token)
        assert (await alice.invoke("Ping")).error is None
        assert sample("conduit_errors_total", where="rate_limit") == errors + 1
    finally:
        runtime().reset()


async def test_user_scope_counts_every_connection_of_the_user_in_redis_as_other_processes_do(redis_url):
    # Two limiters on one Redis, as two server processes have: one count for the user.
    prefix = f"t{secrets.token_hex(4)}"
    conf = {"RATE_LIMIT": "3/hour", "RATE_LIMIT_SCOPE": "user", "REDIS_URL": redis_url, "KEY_PREFIX": prefix}
    with override_settings(CONDUIT_RT=conf):
        first = rate_limit.InvocationLimiter("3/hour", "moving-window", redis_url, prefix)
        second = rate_limit.InvocationLimiter("3/hour", "moving-window", redis_url, prefix)
        alice_a = rate_limit.client_key("tasks", "7", "conn-a")
        alice_b = rate_limit.client_key("tasks", "7", "conn-b")
        anonymous = rate_limit.client_key("tasks", None, "conn-c")
        waits = [
            await first.try_acquire(*alice_a),
            await second.try_acquire(*alice_b),
            await first.try_acquire(*alice_b),
        ]
        assert waits == [0.0, 0.0, 0.0]
        assert await second.try_acquire(*alice_a) > 0  # the 4th, through the other "process"
        assert await second.try_acquire(*anonymous) == 0.0
    with override_settings(CONDUIT_RT={**conf, "RATE_LIMIT_SCOPE": "connection"}):
        assert rate_limit.client_key("tasks", "7", "conn-a") != rate_limit.client_key("tasks", "7", "conn-b")
    client = aioredis.Redis.from_url(redis_url)
    keys = await client.keys(f"{prefix}:*")
    assert keys
    await client.delete(*keys)
    await client.aclose()


async def test_no_limit_when_turned_off(hub_client, alice_token):
    with override_settings(CONDUIT_RT={"RATE_LIMIT": "", "MAX_PENDING_INVOCATIONS": 50}):
        assert get_limiter() is None
        alice = await hub_client("/hubs/tasks", token=alice_token)
        await alice.send(
            *(InvocationMessage(target="Ping", arguments=[], invocation_id=f"n{i}") for i in range(30))
        )
        answers = [await alice.receive_skipping_pings() for _ in range(30)]
    assert all(a.error is None for a in answers)


def test_the_default_is_100_a_minute_per_connection_and_the_env_can_turn_it_off():
    from hubs.conf import DEFAULTS, environ_overrides

    assert (DEFAULTS["RATE_LIMIT"], DEFAULTS["RATE_LIMIT_SCOPE"]) == ("100/minute", "connection")
    assert environ_overrides({"CONDUIT_RT_RATE_LIMIT": ""}) == {"RATE_LIMIT": ""}
    with pytest.raises(ValueError, match="RATE_LIMIT_STRATEGY"):
        rate_limit.InvocationLimiter("1/second", "leaky-bucket", None, "x")


def test_bad_rate_limit_settings_fail_the_system_checks():
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with (
        override_settings(
            CONDUIT_RT={
                "RATE_LIMIT": "100 per fortnight",
                "RATE_LIMIT_SCOPE": "ip",
                "RATE_LIMIT_STRATEGY": "x",
            }
        ),
        pytest.raises(SystemCheckError) as raised,
    ):
        call_command("check")
    for check_id in ("conduit_rt.E001", "conduit_rt.E002", "conduit_rt.E003"):
        assert check_id in str(raised.value)
    call_command("check")  # the defaults pass


async def test_a_bad_rate_limit_setting_does_not_stop_the_connection(hub_client, alice_token):
    with override_settings(CONDUIT_RT={"RATE_LIMIT": "100 per fortnight"}):
        errors = sample("conduit_errors_total", where="rate_limit")
        alice = await hub_client("/hubs/tasks", token=alice_token)
        assert (await alice.invoke("Ping")).error is None
        assert (await alice.invoke("Ping")).error is None
    assert sample("conduit_errors_total", where="rate_limit") == errors + 2


def invocation_workers() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "Invoker._worker"]


async def test_the_invocation_worker_runs_while_invocations_wait_and_ends_with_the_last(
    hub_client, alice_token
):
    """An idle connection holds no worker task (nor its queue): it starts with the next
    invocation, and runs a burst in order."""
    with override_settings(CONDUIT_RT={"RATE_LIMIT": "", "MAX_PENDING_INVOCATIONS": 50}):
        alice = await hub_client("/hubs/tasks", token=alice_token)
        for burst in range(2):
            await alice.send(
                *(
                    InvocationMessage(target="Ping", arguments=[], invocation_id=f"{burst}-{i}")
                    for i in range(10)
                )
            )
            answers = [await alice.receive_skipping_pings() for _ in range(10)]
            assert [a.invocation_id for a in answers] == [f"{burst}-{i}" for i in range(10)]
            assert all(a.error is None for a in answers)
            for _ in range(100):  # loop iterations, not time: the worker's last steps
                if not invocation_workers():
                    break
                await asyncio.sleep(0)
            assert invocation_workers() == []
