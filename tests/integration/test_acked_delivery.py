"""Acknowledged delivery through the hub: persist, pending per connection, ack/nack, retries with
backoff on explicit times, dead letters, requeue, reconnect redelivery, the breaker, confirmation.

Each test runs on the embedded stores (memory) and on real Redis; retry passes are run by the
test at the wall times it chooses (``deliver_due(now=...)``), never by sleeping.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.test import override_settings

from conduit_rt.demo import task_events
from hubs.delivery import members
from hubs.delivery.acked import DeliveryUnavailable
from hubs.delivery.breaker import BreakerState, get_breaker
from hubs.delivery.dead_letters import requeue
from hubs.delivery.pending import get_pending
from hubs.delivery.retry import deliver_due
from hubs.models import AckedMessage, DeadLetter
from hubs.protocol import InvocationMessage
from hubs.runtime import runtime
from hubs.send import get_hub_context
from tests.support.delivery import ECHO, delivery_settings, echo_client

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=["memory", "redis"])
async def stores(request, fresh_delivery_stores):
    """The delivery stores on one backend, fresh for the test; yields the settings in force."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with delivery_settings(redis_url) as conf:
        yield conf


async def subscribed(hub_client, token, task):
    client = await hub_client("/hubs/tasks", token=token)
    await client.invoke("SubscribeToTask", str(task.id))
    return client


def send_acked(method: str = "Note", payload: dict | None = None, group: str = "room"):
    return get_hub_context(ECHO).clients.group(group).asend(method, payload or {"n": 1}, ack=True)


def ack(client, message_id: str):
    """Fire-and-forget AcknowledgeMessage, as the JS helper sends it (no completion)."""
    return client.send(InvocationMessage(target="AcknowledgeMessage", arguments=[message_id]))


async def test_terminal_events_are_persisted_and_pending_per_connection_before_they_arrive(
    stores, hub_client, alice_token, alice_task
):
    one = await subscribed(hub_client, alice_token, alice_task)
    two = await subscribed(hub_client, alice_token, alice_task)
    message_id = await task_events.atask_completed(alice_task.id, result={"url": "/v.mp4"})

    row = await database_sync_to_async(AckedMessage.objects.get)(pk=message_id)
    assert row.method == "TaskCompleted" and row.published_at is not None and row.recipients == 2
    assert row.seq == 1 and row.epoch
    for client in (one, two):
        body = (await client.next_event()).arguments[0]
        assert (body["messageId"], body["retryCount"], body["seq"], body["requiresAck"]) == (
            message_id,
            0,
            1,
            True,
        )
    assert await get_pending().count() == 2

    # Progress is fire-and-forget: nothing persisted, nothing pending.
    progress_id = await task_events.atask_progress(alice_task.id, 50)
    assert "requiresAck" not in (await one.next_event()).arguments[0]
    assert not await database_sync_to_async(AckedMessage.objects.filter(pk=progress_id).exists)()
    assert await get_pending().count() == 2


async def test_acks_are_per_connection_idempotent_and_unknown_ids_are_no_error(
    stores, hub_client, alice_token, alice_task
):
    one = await subscribed(hub_client, alice_token, alice_task)
    two = await subscribed(hub_client, alice_token, alice_task)
    message_id = await task_events.atask_failed(alice_task.id, "disk full")
    await one.next_event()
    await two.next_event()

    assert (await one.invoke("AcknowledgeMessage", message_id)).result is True
    assert (await one.invoke("AcknowledgeMessage", message_id)).result is False  # twice: fine
    assert (await one.invoke("AcknowledgeMessage", "no-such-id")).result is False
    assert await get_pending().count() == 1  # two still owes its ack

    # A pass after the deadline sends it again to two only, with retryCount 1.
    result = await deliver_due(now=time.time() + 10.0 + 2.0 + 0.1)
    assert (result.resent, result.dead_lettered) == (1, 0)
    again = (await two.next_event()).arguments[0]
    assert (again["messageId"], again["retryCount"], again["seq"]) == (message_id, 1, 1)
    assert await one.nothing_more()


async def test_retries_back_off_then_the_message_becomes_a_dead_letter(stores, hub_client, alice_token):
    client, cid = await echo_client(hub_client, alice_token)
    start = time.time()
    message_id = await send_acked()
    assert (await client.next_event()).arguments[0]["retryCount"] == 0

    # ACK_TIMEOUT 10 s plus backoff min(5, 2 * 2**n) without jitter: the gaps between attempts
    # are 12, 14, 15 and (the last attempt only waits for its ack) 10 seconds.
    sent_at, gaps = start, []
    for retry in (1, 2, 3):
        (entry,) = await get_pending().for_connection(cid)
        gaps.append(entry.due - sent_at)
        sent_at = entry.due + 0.01
        assert (await deliver_due(now=sent_at)).resent == 1
        body = (await client.next_event()).arguments[0]
        assert (body["messageId"], body["retryCount"]) == (message_id, retry)
    (entry,) = await get_pending().for_connection(cid)
    gaps.append(entry.due - sent_at)
    assert [round(g) for g in gaps] == [12, 14, 15, 10]

    assert (await deliver_due(now=entry.due - 0.5)).dead_lettered == 0  # not yet
    result = await deliver_due(now=entry.due + 0.01)
    assert (result.resent, result.dead_lettered) == (0, 1)
    dead = await database_sync_to_async(DeadLetter.objects.get)(message_id=message_id)
    assert (dead.attempts, dead.reason, dead.method) == (4, DeadLetter.Reason.NO_ACK, "Note")
    assert dead.connection_id == cid and dead.body["seq"] == 1 and dead.body["n"] == 1
    assert dead.user_id == str((await client.invoke("Whoami")).result["userId"])
    assert await get_pending().count() == 0
    assert await client.nothing_more()


async def test_a_requeued_dead_letter_is_delivered_again_and_leaves_when_acked(
    stores, hub_client, alice_token
):
    client, cid = await echo_client(hub_client, alice_token)
    message_id = await send_acked()
    await client.next_event()
    for _ in range(5):  # run the schedule out
        (entry,) = await get_pending().for_connection(cid) or (None,)
        if entry is None:
            break
        await deliver_due(now=entry.due + 0.01)
    dead = await database_sync_to_async(DeadLetter.objects.get)(message_id=message_id)
    for retry in (1, 2, 3):  # the retries arrived
        assert (await client.next_event()).arguments[0]["retryCount"] == retry
    assert await client.nothing_more()

    (done,) = await requeue([dead.pk])
    assert done.connections == (cid,) and not done.waiting
    body = (await client.next_event()).arguments[0]
    assert (body["messageId"], body["retryCount"], body["n"]) == (message_id, 4, 1)
    assert not await database_sync_to_async(DeadLetter.objects.filter(pk=dead.pk).exists)()
    assert [e.message_id for e in await get_pending().for_connection(cid)] == [message_id]
    assert (await client.invoke("AcknowledgeMessage", message_id)).result is True
    assert await get_pending().count() == 0


@pytest.mark.parametrize("policy", ["retry", "dead_letter"])
async def test_nack_follows_the_policy(stores, hub_client, alice_token, policy):
    with override_settings(CONDUIT_RT={**stores, "NACK_POLICY": policy}):
        client, cid = await echo_client(hub_client, alice_token)
        message_id = await send_acked()
        await client.next_event()
        answer = await client.invoke("NackMessage", message_id, "cannot parse")
        assert answer.result == policy
        result = await deliver_due(now=time.time() + 0.01)
        if policy == "retry":
            assert result.resent == 1
            assert (await client.next_event()).arguments[0]["retryCount"] == 1
            assert [e.attempts for e in await get_pending().for_connection(cid)] == [1]
        else:
            assert result.resent == 0 and await get_pending().count() == 0
            dead = await database_sync_to_async(DeadLetter.objects.get)(message_id=message_id)
            assert dead.reason == DeadLetter.Reason.NACKED and dead.last_error == "Nacked: cannot parse"
        assert (await client.invoke("NackMessage", "unknown-id", "x")).result == "unknown"


async def test_a_users_new_connection_gets_what_the_old_one_did_not_ack(stores, hub_client, alice_token, bob):
    old, old_cid = await echo_client(hub_client, alice_token)
    message_id = await send_acked()
    await old.next_event()
    await old.close()  # gone without acking (the official client reconnects with a new id)

    new, _ = await echo_client(hub_client, alice_token, group=None)
    body = (await new.next_event()).arguments[0]
    assert (body["messageId"], body["retryCount"]) == (message_id, 1)
    assert await get_pending().for_connection(old_cid) == []
    assert (await new.invoke("AcknowledgeMessage", message_id)).result is True
    assert await get_pending().count() == 0


async def test_a_second_live_connection_does_not_take_over_the_first_ones_messages(
    stores, hub_client, alice_token
):
    first, first_cid = await echo_client(hub_client, alice_token)
    await send_acked()
    await first.next_event()
    _second, _ = await echo_client(hub_client, alice_token, group=None)
    assert len(await get_pending().for_connection(first_cid)) == 1


async def test_confirmation_true_when_acked_in_time_false_otherwise(stores, hub_client, alice_token):
    client, _ = await echo_client(hub_client, alice_token, group=None)
    invocation = asyncio.ensure_future(client.invoke("Confirm", "yes?", 2.0))
    event = await client.communicator.receive_output(timeout=3)  # the PleaseConfirm
    (message,) = client.decoder.feed(event["text"])
    assert message.target == "PleaseConfirm"
    await ack(client, message.arguments[0]["messageId"])  # handled while Confirm still runs
    assert (await asyncio.wait_for(invocation, 3)).result is True

    answer = await client.invoke("Confirm", "again?", 0.2)  # never acked
    assert answer.result is False
    assert [e.target for e in client.events] == ["PleaseConfirm"]
    assert await get_pending().count() == 0  # cleaned up both times


async def test_breaker_open_spools_acked_sends_and_refuses_fire_and_forget(stores, hub_client, alice_token):
    client, _ = await echo_client(hub_client, alice_token)
    breaker = get_breaker()
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN

    first = await send_acked(payload={"n": 1})
    second = await send_acked(payload={"n": 2})
    rows = await database_sync_to_async(lambda: list(AckedMessage.objects.order_by("created_at")))()
    assert [(r.id, r.published_at) for r in rows] == [(first, None), (second, None)]
    with pytest.raises(DeliveryUnavailable):
        await get_hub_context(ECHO).clients.group("room").asend("Note", {"n": 3})
    assert (await deliver_due(now=time.time())).skipped  # no pass while it is open
    assert await client.nothing_more()

    breaker.record_success()  # as a successful trial call would
    result = await deliver_due(now=time.time() + 0.01)
    assert result.published == 2
    bodies = [(await client.next_event()).arguments[0] for _ in range(2)]
    assert [(b["messageId"], b["n"], b["seq"]) for b in bodies] == [(first, 1, 1), (second, 2, 2)]
    assert await get_pending().count() == 2


async def test_the_embedded_runner_retries_on_its_own(stores, hub_client, alice_token, monkeypatch):
    from hubs.delivery import runner

    with override_settings(
        CONDUIT_RT={**stores, "ACK_TIMEOUT": 0.2, "RETRY_BACKOFF": 0.1, "RETRY_INTERVAL": 0.05}
    ):
        client, _ = await echo_client(hub_client, alice_token)
        monkeypatch.setattr(runtime(), "autostart_runners", True)
        assert runner.ensure_embedded_runner() is True
        try:
            message_id = await send_acked()
            first = (await client.next_event()).arguments[0]
            again = (await client.next_event(timeout=3)).arguments[0]
            assert (first["retryCount"], again["retryCount"]) == (0, 1)
            assert again["messageId"] == message_id
        finally:
            runtime().loop().stop_runners()


async def test_a_pass_moves_what_a_vanished_connection_owes_to_the_users_live_one(
    stores, hub_client, alice_token
):
    old, old_cid = await echo_client(hub_client, alice_token)
    message_id = await send_acked()
    await old.next_event()
    new, new_cid = await echo_client(hub_client, alice_token, group=None)
    assert await new.nothing_more()  # the old connection is still present: nothing moves yet
    # The old connection's server died: its lease is gone (here ended by hand), its socket too.
    await members.get_members().vanish(old_cid)

    (entry,) = await get_pending().for_connection(old_cid)
    result = await deliver_due(now=entry.due + 0.01)
    assert result.resent == 1
    body = (await new.next_event()).arguments[0]
    assert (body["messageId"], body["retryCount"]) == (message_id, 1)
    assert await old.nothing_more()
    assert await get_pending().for_connection(old_cid) == []
    assert [e.message_id for e in await get_pending().for_connection(new_cid)] == [message_id]


async def test_a_publish_that_fails_after_registration_is_delivered_by_the_retries(
    stores, hub_client, alice_token, monkeypatch
):
    client, cid = await echo_client(hub_client, alice_token)
    layer = get_channel_layer()
    real_group_send = layer.group_send
    failing = {"left": 1}

    async def flaky(group, message):
        if message.get("type") == "conduit.deliver" and failing["left"]:
            failing["left"] -= 1
            raise ConnectionError("the layer dropped the publish")
        await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", flaky)
    message_id = await send_acked()
    row = await database_sync_to_async(AckedMessage.objects.get)(pk=message_id)
    assert row.published_at is not None and row.seq == 1  # persisted with its seq
    assert await client.nothing_more()  # the publish itself was lost ...
    (entry,) = await get_pending().for_connection(cid)
    assert (await deliver_due(now=entry.due + 0.01)).resent == 1  # ... the retry delivers it
    body = (await client.next_event()).arguments[0]
    assert (body["messageId"], body["retryCount"], body["seq"]) == (message_id, 1, 1)


async def test_acknowledge_messages_clears_a_burst_in_one_call(stores, hub_client, alice_token):
    client, cid = await echo_client(hub_client, alice_token)
    ids = [await send_acked(payload={"n": n}) for n in range(3)]
    for _ in ids:
        await client.next_event()
    answer = await client.invoke("AcknowledgeMessages", [ids[0], ids[2], "unknown", ids[0]])
    assert answer.result == 2
    assert [e.message_id for e in await get_pending().for_connection(cid)] == [ids[1]]
    await client.send(InvocationMessage(target="AcknowledgeMessages", arguments=[[ids[1]]]))  # non-blocking
    assert (await client.invoke("AcknowledgeMessage", ids[1])).result is False  # cleared by the batch
    for bad in (["ok", 3], "not-a-list", [""], ["x"] * 1001):
        assert "messageIds must be a list" in (await client.invoke("AcknowledgeMessages", bad)).error
