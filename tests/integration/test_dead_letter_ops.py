"""Operating dead letters: ``manage.py dead_letters list|requeue|purge`` and the admin.

Dead letters for the command tests are made for real, through the acknowledged path (sent, never
acknowledged, retried on explicit times until the schedule runs out), on the Redis stores that
requeue from a separate process needs. The command runs in the test's process, so the requeued
message reaches the still-connected communicator client. Admin views are sync: async tests call
the Django test client through ``sync_to_async``; the sync admin tests make rows directly.
"""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from hubs.delivery.pending import get_pending
from hubs.delivery.retry import deliver_due
from hubs.models import AckedMessage, DeadLetter
from hubs.send import get_hub_context
from tests.support.delivery import ACK_SETTINGS, ECHO, delivery_settings, echo_client

pytestmark = [pytest.mark.django_db(transaction=True)]

ATTEMPTS = ACK_SETTINGS["MAX_RETRIES"] + 1
HUB = "echo"  # rows name hubs by hub name
DEAD_LETTERS = "/admin/hubs/deadletter/"
ACKED_MESSAGES = "/admin/hubs/ackedmessage/"


@pytest.fixture
async def redis_stores(fresh_delivery_stores, redis_url):
    """The delivery stores on Redis (as with ``REDIS_URL`` set), under a fresh key prefix."""
    async with delivery_settings(redis_url) as conf:
        yield conf


@pytest.fixture
async def memory_stores(fresh_delivery_stores):
    """The embedded mode's stores (no ``REDIS_URL``), fresh for the test."""
    async with delivery_settings(None) as conf:
        yield conf


async def dead_letters_of(clients, method: str = "Note", group: str = "room") -> str:
    """Send an acknowledged ``method`` to ``group``, let every one of ``clients`` (its members)
    receive each attempt without acknowledging, run the schedule out; returns the message id."""
    message_id = await get_hub_context(ECHO).clients.group(group).asend(method, {"n": 1}, ack=True)
    now = time.time()
    for attempt in range(ATTEMPTS + 1):  # ATTEMPTS sends, then the pass that dead-letters
        if attempt:
            now += 100.0  # past every entry's due time (ack timeout + backoff <= 15 s)
            result = await deliver_due(now=now)
            if attempt < ATTEMPTS:
                assert result.resent == len(clients)
            else:
                assert (result.resent, result.dead_lettered) == (0, len(clients))
        if attempt < ATTEMPTS:
            for client in clients:
                body = (await client.next_event()).arguments[0]
                assert (body["messageId"], body["retryCount"]) == (message_id, attempt)
    return message_id


async def run(*args: str) -> tuple[str, str]:
    """``manage.py dead_letters ARGS`` from async code; its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    await sync_to_async(call_command)("dead_letters", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_sync(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("dead_letters", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def dead_letter_row(message_id: str = "m-1", connection_id: str = "gone-cid", **fields) -> DeadLetter:
    values = {
        "hub": HUB,
        "namespace": "echo",
        "method": "Note",
        "body": {"messageId": message_id, "retryCount": 0, "n": 1, "seq": 7, "epoch": "e1"},
        "user_id": "42",
        "attempts": ATTEMPTS,
        "reason": DeadLetter.Reason.NO_ACK,
        "last_error": "No acknowledgement\nafter 4 attempts",
        **fields,
    }
    return DeadLetter.objects.create(message_id=message_id, connection_id=connection_id, **values)


def admin_client() -> Client:
    user = get_user_model().objects.create_superuser("ops", password="pw", email="")
    client = Client()
    client.force_login(user)
    return client


# --- manage.py dead_letters ---------------------------------------------------------------------


async def test_list_prints_one_line_per_dead_letter_starting_with_its_message_id(
    redis_stores, hub_client, alice_token
):
    one, one_cid = await echo_client(hub_client, alice_token)
    two, two_cid = await echo_client(hub_client, alice_token)
    await one.invoke("Join", "solo")
    shared = await dead_letters_of([one, two])  # one message, two recipients: two dead letters
    alone = await dead_letters_of([one], method="Other", group="solo")

    out, err = await run("list")
    lines = out.splitlines()
    assert len(lines) == 3 and err.strip() == "3 dead letter(s)."
    assert sorted(line.split("\t")[0] for line in lines) == sorted([shared, shared, alone])
    fields = lines[0].split("\t")  # newest first
    assert fields[:6] == [alone, "Other", one_cid, fields[3], str(ATTEMPTS), "no_ack"]
    assert fields[3] == str((await one.invoke("Whoami")).result["userId"])
    assert timezone.datetime.fromisoformat(fields[6]) <= timezone.now()
    assert fields[7]  # the last error, on one line
    assert {tuple(line.split("\t")[:3]) for line in lines[1:]} == {
        (shared, "Note", one_cid),
        (shared, "Note", two_cid),
    }

    assert [line.split("\t")[0] for line in (await run("list", "--method", "Other"))[0].splitlines()] == [
        alone
    ]
    assert (await run("list", "--limit", "1"))[0].splitlines() == lines[:1]
    assert len((await run("list", "--hub", HUB, "--reason", "no_ack"))[0].splitlines()) == 3
    assert (await run("list", "--reason", "nacked"))[0] == ""
    assert (await run("list", "--hub", "tasks"))[0] == ""
    with pytest.raises(CommandError, match="--limit"):
        await run("list", "--limit", "0")


async def test_requeue_delivers_again_to_the_connected_client_and_removes_the_row(
    redis_stores, hub_client, alice_token
):
    client, cid = await echo_client(hub_client, alice_token)
    message_id = await dead_letters_of([client])
    dead = await database_sync_to_async(DeadLetter.objects.get)(message_id=message_id)
    assert dead.attempts == ATTEMPTS and await client.nothing_more()

    out, err = await run("requeue", message_id)
    assert out.splitlines() == [f"{message_id}\t{cid}\tdelivered to {cid}"]
    assert err.strip() == "Requeued 1 dead letter(s)."
    body = (await client.next_event()).arguments[0]
    assert (body["messageId"], body["retryCount"], body["n"]) == (message_id, dead.attempts, 1)
    assert not await database_sync_to_async(DeadLetter.objects.filter(pk=dead.pk).exists)()
    assert [e.message_id for e in await get_pending().for_connection(cid)] == [message_id]
    assert (await client.invoke("AcknowledgeMessage", message_id)).result is True
    assert await get_pending().count() == 0


async def test_requeue_refuses_unknown_message_ids_before_requeueing_anything(
    redis_stores, hub_client, alice_token
):
    client, _ = await echo_client(hub_client, alice_token)
    message_id = await dead_letters_of([client])

    with pytest.raises(CommandError, match="no-such-id") as error:
        await run("requeue", message_id, "no-such-id")
    assert message_id not in str(error.value) and "Nothing was done" in str(error.value)
    assert await database_sync_to_async(DeadLetter.objects.filter(message_id=message_id).exists)()
    assert await get_pending().count() == 0
    assert await client.nothing_more()


async def test_requeue_all_waits_for_the_users_next_connection_when_none_is_live(
    redis_stores, hub_client, alice_token
):
    old, old_cid = await echo_client(hub_client, alice_token)
    message_id = await dead_letters_of([old])
    user_id = str((await old.invoke("Whoami")).result["userId"])
    await old.close()

    out, _ = await run("requeue", "--all")
    assert out.splitlines() == [f"{message_id}\t{old_cid}\twaiting for a connection of user {user_id}"]
    assert not await database_sync_to_async(DeadLetter.objects.exists)()
    assert [e.message_id for e in await get_pending().for_connection(old_cid)] == [message_id]

    new, _ = await echo_client(hub_client, alice_token, group=None)  # adopts what the old one owed
    assert (await new.next_event()).arguments[0]["messageId"] == message_id
    assert (await new.invoke("AcknowledgeMessage", message_id)).result is True


def test_requeue_needs_redis(memory_stores):
    row = dead_letter_row()
    with pytest.raises(CommandError, match="needs Redis"):
        run_sync("requeue", row.message_id)
    with pytest.raises(CommandError, match="admin"):
        run_sync("requeue", "--all")
    assert DeadLetter.objects.filter(pk=row.pk).exists()
    assert async_to_sync(get_pending().count)() == 0
    assert run_sync("list")[0].startswith(f"{row.message_id}\tNote\tgone-cid\t42\t{ATTEMPTS}\tno_ack\t")


def test_purge_by_message_id_age_or_all_prints_the_count(memory_stores):
    dead_letter_row("m-1", "c-1")
    dead_letter_row("m-1", "c-2")
    old = dead_letter_row("m-2", "c-1")
    dead_letter_row("m-3", "c-3")
    DeadLetter.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))

    with pytest.raises(CommandError, match="unknown"):
        run_sync("purge", "m-1", "unknown")
    assert DeadLetter.objects.count() == 4
    assert run_sync("purge", "m-1")[0].strip() == "Purged 2 dead letter(s)."
    assert run_sync("purge", "--older-than", "3600")[0].strip() == "Purged 1 dead letter(s)."
    assert list(DeadLetter.objects.values_list("message_id", flat=True)) == ["m-3"]
    assert run_sync("purge", "--all")[0].strip() == "Purged 1 dead letter(s)."
    assert run_sync("purge", "--all")[0].strip() == "Purged 0 dead letter(s)."


async def test_purge_real_dead_letters(redis_stores, hub_client, alice_token):
    one, _ = await echo_client(hub_client, alice_token)
    two, _ = await echo_client(hub_client, alice_token)
    message_id = await dead_letters_of([one, two])
    out, _ = await run("purge", message_id)
    assert out.strip() == "Purged 2 dead letter(s)."
    assert (await run("list"))[0] == ""


# --- admin --------------------------------------------------------------------------------------


def test_admin_changelists_and_detail_render_for_staff(memory_stores):
    dead = dead_letter_row("dead-msg-1")
    AckedMessage.objects.create(
        id="acked-msg-1",
        hub=HUB,
        namespace="echo",
        method="Note",
        body={"n": 1},
        targets=[["x", False]],
        publish_after=timezone.now(),
        published_at=timezone.now(),
    )
    AckedMessage.objects.create(
        id="spooled-msg-1",
        hub=HUB,
        namespace="echo",
        method="Note",
        body={"n": 2},
        targets=[["x", False]],
        publish_after=timezone.now(),
    )
    client = admin_client()

    page = client.get(DEAD_LETTERS)
    assert page.status_code == 200
    html = page.content.decode()
    assert "dead-msg-1" in html and "dead since" in html.lower()
    assert 'value="requeue_dead_letters"' in html and 'value="purge_dead_letters"' in html
    assert "dead-msg-1" in client.get(DEAD_LETTERS, {"q": "gone-cid"}).content.decode()
    assert "dead-msg-1" not in client.get(DEAD_LETTERS, {"q": "nobody"}).content.decode()

    detail = client.get(f"{DEAD_LETTERS}{dead.pk}/change/")
    assert detail.status_code == 200
    text = detail.content.decode()
    assert re.search(r"<pre[^>]*>\{\n  &quot;epoch&quot;: &quot;e1&quot;,", text)  # pretty JSON
    assert 'name="message_id"' not in text  # nothing editable
    assert client.get(f"{DEAD_LETTERS}add/").status_code == 403

    page = client.get(ACKED_MESSAGES)
    assert page.status_code == 200
    assert "acked-msg-1" in page.content.decode() and "spooled-msg-1" in page.content.decode()
    spooled = client.get(ACKED_MESSAGES, {"state": "spooled"}).content.decode()
    assert "spooled-msg-1" in spooled and "acked-msg-1" not in spooled
    assert "acked-msg-1" in client.get(ACKED_MESSAGES, {"q": "acked-msg"}).content.decode()
    assert client.get(f"{ACKED_MESSAGES}acked-msg-1/change/").status_code == 200
    assert client.get(f"{ACKED_MESSAGES}add/").status_code == 403
    assert client.get(f"{ACKED_MESSAGES}acked-msg-1/delete/").status_code == 403


def test_admin_needs_staff(memory_stores, alice):
    dead_letter_row()
    client = Client()
    client.force_login(alice)  # a user, not staff
    for url in (DEAD_LETTERS, ACKED_MESSAGES):
        page = client.get(url)
        assert page.status_code == 302 and page.url.startswith("/admin/login/")
    answer = client.post(DEAD_LETTERS, {"action": "requeue_dead_letters", "_selected_action": ["1"]})
    assert answer.status_code == 302 and answer.url.startswith("/admin/login/")
    assert DeadLetter.objects.count() == 1


def test_admin_requeue_action_without_a_live_recipient_leaves_it_waiting(memory_stores):
    dead = dead_letter_row("dead-msg-2")
    client = admin_client()

    page = client.post(
        DEAD_LETTERS, {"action": "requeue_dead_letters", "_selected_action": [dead.pk]}, follow=True
    )
    assert page.status_code == 200
    assert (
        "Requeued 1 dead letter(s): 0 delivered to 0 live connection(s), "
        "1 waiting for the recipient to reconnect."
    ) in page.content.decode()
    assert not DeadLetter.objects.filter(pk=dead.pk).exists()
    (entry,) = async_to_sync(get_pending().for_connection)("gone-cid")
    assert (entry.message_id, entry.user_id) == ("dead-msg-2", "42")
    restored = AckedMessage.objects.get(pk="dead-msg-2")
    assert (restored.method, restored.seq, restored.epoch) == ("Note", 7, "e1")


def test_admin_purge_action_deletes_and_reports_the_count(memory_stores):
    rows = [dead_letter_row("dead-msg-3", f"c-{n}") for n in range(3)]
    client = admin_client()
    page = client.post(
        DEAD_LETTERS,
        {"action": "purge_dead_letters", "_selected_action": [rows[0].pk, rows[1].pk]},
        follow=True,
    )
    assert "Purged 2 dead letter(s)." in page.content.decode()
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [rows[2].pk]
    assert async_to_sync(get_pending().count)() == 0


async def test_admin_requeue_action_delivers_to_a_live_connection(redis_stores, hub_client, alice_token):
    client, cid = await echo_client(hub_client, alice_token)
    message_id = await dead_letters_of([client])
    dead = await database_sync_to_async(DeadLetter.objects.get)(message_id=message_id)
    browser = await sync_to_async(admin_client)()

    page = await sync_to_async(browser.post)(
        DEAD_LETTERS, {"action": "requeue_dead_letters", "_selected_action": [dead.pk]}, follow=True
    )
    assert (
        "Requeued 1 dead letter(s): 1 delivered to 1 live connection(s), "
        "0 waiting for the recipient to reconnect."
    ) in page.content.decode()
    body = (await client.next_event()).arguments[0]
    assert (body["messageId"], body["retryCount"]) == (message_id, ATTEMPTS)
    assert not await database_sync_to_async(DeadLetter.objects.filter(pk=dead.pk).exists)()
    assert [e.message_id for e in await get_pending().for_connection(cid)] == [message_id]
