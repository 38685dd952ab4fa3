"""TaskHub and VideoGenerationHub: authentication, ownership, task events, the send facade."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from conduit_rt.demo import task_events
from hubs.auth.tokens import issue_token
from hubs.send import get_hub_context

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_unauthenticated_websocket_is_refused(ws_app):
    communicator = WebsocketCommunicator(ws_app, "/hubs/tasks")
    connected, _ = await communicator.connect(timeout=3)
    assert not connected


@pytest.mark.parametrize("bad", ["nonsense", "a:b:c"])
async def test_invalid_token_is_refused(ws_app, alice, bad):
    communicator = WebsocketCommunicator(ws_app, f"/hubs/tasks?access_token={bad}")
    connected, _ = await communicator.connect(timeout=3)
    assert not connected


async def test_expired_token_is_refused(ws_app, alice):
    token = issue_token(alice, ttl=60, now=0)
    communicator = WebsocketCommunicator(
        ws_app, "/hubs/tasks", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await communicator.connect(timeout=3)
    assert not connected


async def test_token_in_query_string_is_accepted(ws_app, alice_token):
    communicator = WebsocketCommunicator(ws_app, f"/hubs/tasks?access_token={alice_token}")
    connected, _ = await communicator.connect(timeout=3)
    assert connected
    await communicator.disconnect()


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_subscribe_and_receive_task_events(hub_client, alice_token, alice_task, protocol):
    client = await hub_client("/hubs/tasks", token=alice_token, protocol=protocol)
    done = await client.invoke("SubscribeToTask", str(alice_task.id))
    assert done.error is None
    assert done.result == {
        "taskId": str(alice_task.id),
        "taskType": "video-generation",
        "status": "pending",
        "progressPercentage": 0,
    }
    message_id = await task_events.atask_progress(
        alice_task.id, 50, message="half way", correlation_id="corr-1"
    )
    event = await client.next_event()
    assert event.target == "TaskProgress"
    (payload,) = event.arguments
    assert payload["taskId"] == str(alice_task.id)
    assert payload["progressPercentage"] == 50
    assert payload["status"] == "running"
    assert payload["message"] == "half way"
    assert payload["messageId"] == message_id
    assert payload["correlationId"] == "corr-1"
    assert payload["retryCount"] == 0
    assert payload["timestamp"].endswith("Z")

    await client.invoke("UnsubscribeFromTask", str(alice_task.id))
    await task_events.atask_progress(alice_task.id, 60)
    assert (await client.invoke("Ping")).result["pong"] == "ok"
    assert client.events == []


async def test_video_hub_shares_the_task_groups(hub_client, alice_token, alice_task):
    tasks = await hub_client("/hubs/tasks", token=alice_token)
    video = await hub_client("/hubs/video-generation", token=alice_token)
    await tasks.invoke("SubscribeToTask", str(alice_task.id))
    assert (await video.invoke("SubscribeToTask", str(alice_task.id))).error is None
    await task_events.atask_completed(alice_task.id, result={"video_url": "/v.mp4"})
    for client in (tasks, video):
        event = await client.next_event()
        assert event.target == "TaskCompleted"
        assert event.arguments[0]["result"] == {"videoUrl": "/v.mp4"}
        assert "message" not in event.arguments[0]  # nulls are left out


@pytest.mark.parametrize("task_ref", ["bob", "missing", "not-a-uuid"])
async def test_someone_elses_or_unknown_task_is_not_found_and_joins_nothing(
    hub_client, alice_token, bob_task, task_ref
):
    task_id = {
        "bob": str(bob_task.id),
        "missing": "00000000-0000-0000-0000-000000000000",
        "not-a-uuid": "nope",
    }[task_ref]
    client = await hub_client("/hubs/tasks", token=alice_token)
    done = await client.invoke("SubscribeToTask", task_id)
    assert (
        done.error
        == "An unexpected error occurred invoking 'SubscribeToTask' on the server. HubException: Task not found."
    )
    assert (await client.invoke("WhoAmI")).error  # not a TaskHub method
    await task_events.atask_progress(bob_task.id, 10)
    assert (await client.invoke("Ping")).error is None
    assert client.events == []


async def test_send_facade_reaches_user_connection_and_all(hub_client, alice, alice_token):
    first = await hub_client("/hubs/tasks", token=alice_token)
    second = await hub_client("/hubs/tasks", token=alice_token)
    context = get_hub_context("conduit_rt.demo.hubs.TaskHub")
    await context.clients.user(alice.pk).asend("Notice", {"text": "to alice"})
    for client in (first, second):
        assert (await client.next_event()).arguments[0]["text"] == "to alice"
    await context.clients.all.asend("Notice", {"text": "to all"})
    for client in (first, second):
        assert (await client.next_event()).arguments[0]["text"] == "to all"


async def test_bad_payloads_are_refused_before_anything_is_sent_or_kept(hub_client, alice_token, alice_task):
    from hubs.delivery.history import get_history

    client = await hub_client("/hubs/tasks", token=alice_token)
    await client.invoke("SubscribeToTask", str(alice_task.id))
    group = get_hub_context("conduit_rt.demo.hubs.TaskHub").clients.group(f"task-{alice_task.id}")
    with pytest.raises(TypeError, match="single object"):
        await group.asend("X", [1, 2])
    with pytest.raises(ValueError, match=r"NaN"):
        await group.asend("X", {"bad": float("nan")})
    stream = get_hub_context("conduit_rt.demo.hubs.TaskHub").clients.stream_of(f"task-{alice_task.id}")
    assert await get_history().position(stream) is None
    assert (await client.invoke("Ping")).error is None
    assert client.events == []


@pytest.mark.parametrize("key", ["seq", "epoch", "messageId", "message_id", "retry_count"])
async def test_payload_keys_of_the_envelope_are_refused(key):
    group = get_hub_context("conduit_rt.demo.hubs.TaskHub").clients.group("any")
    with pytest.raises(ValueError, match="belong to the message envelope"):
        await group.asend("X", {key: 1})
