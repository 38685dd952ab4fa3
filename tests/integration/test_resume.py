"""Sequence numbers on group messages and ResumeTask through the communicator."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from conduit_rt.demo import task_events
from conduit_rt.demo.models import Task

pytestmark = [pytest.mark.django_db(transaction=True)]


async def drain(client, count: int) -> list[dict]:
    return [(await client.next_event()).arguments[0] for _ in range(count)]


async def test_group_messages_carry_seq_and_epoch(hub_client, alice_token, alice_task):
    client = await hub_client("/hubs/tasks", token=alice_token)
    await client.invoke("SubscribeToTask", str(alice_task.id))
    for percent in (10, 20, 30):
        await task_events.atask_progress(alice_task.id, percent)
    payloads = await drain(client, 3)
    assert [p["seq"] for p in payloads] == [1, 2, 3]
    assert len({p["epoch"] for p in payloads}) == 1


async def test_resume_replays_what_was_missed_in_order_with_original_ids(hub_client, alice_token, alice_task):
    first = await hub_client("/hubs/tasks", token=alice_token)
    await first.invoke("SubscribeToTask", str(alice_task.id))
    ids = [await task_events.atask_progress(alice_task.id, p) for p in (10, 20, 30, 40)]
    seen = await drain(first, 1)  # the client saw seq 1, then "lost its connection"
    epoch = seen[0]["epoch"]

    second = await hub_client("/hubs/tasks", token=alice_token)
    answer = await second.invoke("ResumeTask", str(alice_task.id), 1, epoch)
    assert answer.result == {
        "taskId": str(alice_task.id),
        "recovered": True,
        "replayed": 3,
        "seq": 4,
        "epoch": epoch,
    }
    replayed = [m.arguments[0] for m in second.events]
    assert [(p["seq"], p["messageId"], p["progressPercentage"]) for p in replayed] == [
        (2, ids[1], 20),
        (3, ids[2], 30),
        (4, ids[3], 40),
    ]
    second.events.clear()
    await task_events.atask_progress(alice_task.id, 50)  # and it is subscribed again
    assert (await second.next_event()).arguments[0]["seq"] == 5


@override_settings(CONDUIT_RT={"HISTORY_MAX_LENGTH": 2})
async def test_resume_outside_the_window_sends_a_snapshot(hub_client, alice_token, alice_task):
    for percent in (10, 20, 30, 40, 50):
        await task_events.atask_progress(alice_task.id, percent)
    await database_sync_to_async(Task.objects.filter(pk=alice_task.pk).update)(
        status=Task.Status.RUNNING, progress=50, message="half"
    )
    client = await hub_client("/hubs/tasks", token=alice_token)
    answer = await client.invoke("ResumeTask", str(alice_task.id), 1)
    assert answer.result["recovered"] is False and answer.result["seq"] == 5
    (snapshot,) = client.events
    assert snapshot.target == "TaskProgress"
    assert snapshot.arguments[0]["progressPercentage"] == 50
    assert snapshot.arguments[0]["seq"] == 5
    assert snapshot.arguments[0]["message"] == "half"


async def test_resume_of_a_completed_task_with_a_lost_epoch_gets_the_completion(
    hub_client, alice_token, alice_task
):
    await task_events.atask_completed(alice_task.id, result={"ok": True})
    await database_sync_to_async(Task.objects.filter(pk=alice_task.pk).update)(
        status=Task.Status.COMPLETED, progress=100, result={"ok": True}
    )
    client = await hub_client("/hubs/tasks", token=alice_token)
    answer = await client.invoke("ResumeTask", str(alice_task.id), 0, "an-old-epoch")
    assert answer.result["recovered"] is False
    (snapshot,) = client.events
    assert snapshot.target == "TaskCompleted" and snapshot.arguments[0]["result"] == {"ok": True}


async def test_live_events_during_a_replay_follow_it_in_order_once(hub_client, alice_token, alice_task):
    for percent in range(1, 51):
        await task_events.atask_progress(alice_task.id, percent)
    client = await hub_client("/hubs/tasks", token=alice_token)

    async def more() -> None:
        for percent in range(51, 71):
            await task_events.atask_progress(alice_task.id, percent)
            await asyncio.sleep(0)

    answer, _ = await asyncio.gather(client.invoke("ResumeTask", str(alice_task.id), 0), more())
    assert answer.result["recovered"] is True
    received = [m.arguments[0]["seq"] for m in client.events]
    client.events.clear()
    while len(received) < 70:
        received.append((await client.next_event()).arguments[0]["seq"])
    assert received == list(range(1, 71))


@pytest.mark.parametrize("last_seq", [-1, "3", 1.5, True, None])
async def test_resume_validates_its_arguments(hub_client, alice_token, alice_task, last_seq):
    client = await hub_client("/hubs/tasks", token=alice_token)
    answer = await client.invoke("ResumeTask", str(alice_task.id), last_seq)
    assert "lastSeq must be a non-negative integer." in answer.error


async def test_resume_of_someone_elses_task_is_not_found(hub_client, alice_token, bob_task):
    client = await hub_client("/hubs/tasks", token=alice_token)
    answer = await client.invoke("ResumeTask", str(bob_task.id), 0)
    assert answer.error.endswith("HubException: Task not found.")
