"""The hub base class through Channels' communicator: handshake, dispatch, errors, streaming, timers."""

from __future__ import annotations

import pytest
from django.test import override_settings

from hubs.protocol import (
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    InvocationMessage,
    PingMessage,
    StreamItemMessage,
    get_protocol,
)
from tests.support.echo_hub import EVENTS

pytestmark = [pytest.mark.django_db(transaction=True)]

ECHO = "/hubs/echo"


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_invoke_round_trip_in_both_protocols(hub_client, protocol):
    client = await hub_client(ECHO, protocol=protocol)
    done = await client.invoke("Echo", {"a": [1, 2.5, "x", None, True]})
    assert done.error is None
    assert done.result == {"a": [1, 2.5, "x", None, True]}
    assert (await client.invoke("add", 2, 3)).result == 5
    assert (await client.invoke("Add", 2)).result == 2


async def test_method_names_are_case_insensitive_and_sync_methods_run(hub_client):
    client = await hub_client(ECHO)
    assert (await client.invoke("ECHO", "x")).result == "x"
    assert (await client.invoke("syncecho", "y")).result == "y"


@pytest.mark.parametrize(
    "target",
    [
        "Missing",
        "NotExposed",
        "not_exposed",
        "_hidden",
        "Hidden",
        "dispatch",
        "websocket_receive",
        "conduit_close",
    ],
)
async def test_only_allowlisted_methods_are_reachable(hub_client, target):
    client = await hub_client(ECHO)
    done = await client.invoke(target)
    assert done.error == (
        f"Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."
    )


async def test_wrong_argument_count_gets_a_clear_error(hub_client):
    client = await hub_client(ECHO)
    done = await client.invoke("Echo", 1, 2)
    assert done.error == (
        "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: "
        "Invocation provides 2 argument(s) but target expects 1."
    )
    done = await client.invoke("Add")
    assert "target expects 1 to 2" in done.error


# The hub alone; the default filter (DiagnosticFilter) adds an error id: tests/integration/test_hub_filters.py
@override_settings(CONDUIT_RT={"HUB_FILTERS": []})
async def test_hub_errors_are_shown_and_other_errors_hidden(hub_client):
    client = await hub_client(ECHO)
    shown = await client.invoke("Fail", True)
    assert shown.error == (
        "An unexpected error occurred invoking 'Fail' on the server. HubException: this is fine to show"
    )
    hidden = await client.invoke("Fail", False)
    assert hidden.error == "An unexpected error occurred invoking 'Fail' on the server."
    assert "secret" not in hidden.error
    assert (await client.invoke("Echo", 1)).result == 1  # the connection serves on


async def test_non_blocking_invocation_gets_no_completion(hub_client):
    client = await hub_client(ECHO)
    await client.send(InvocationMessage(target="Echo", arguments=["quiet"]))
    await client.send(InvocationMessage(target="Missing", arguments=[]))
    done = await client.invoke("Echo", "loud")
    assert done.result == "loud"
    assert client.events == []


async def test_several_records_in_one_frame_and_a_record_split_across_frames(hub_client):
    client = await hub_client(ECHO)
    json = get_protocol("json")
    frame = json.encode_many(
        [
            InvocationMessage(target="Echo", arguments=[1], invocation_id="a"),
            PingMessage(),
            InvocationMessage(target="Echo", arguments=[2], invocation_id="b"),
        ]
    ).decode()
    third = json.encode(InvocationMessage(target="Echo", arguments=[3], invocation_id="c")).decode()
    await client.send_raw(frame + third[:7])
    await client.send_raw(third[7:])
    results = [await client.receive_skipping_pings() for _ in range(3)]
    assert [(m.invocation_id, m.result) for m in results] == [("a", 1), ("b", 2), ("c", 3)]


async def test_handshake_with_trailing_messages_in_the_same_binary_frame(hub_client):
    client = await hub_client(ECHO, protocol="messagepack", handshake=False)
    mp = get_protocol("messagepack")
    data = b'{"protocol":"messagepack","version":1}\x1e' + mp.encode(
        InvocationMessage(target="Echo", arguments=["early"], invocation_id="1")
    )
    await client.send_raw(data)
    frame = await client.communicator.receive_output(timeout=3)
    assert frame["bytes"] == b"{}\x1e"  # binary frame for MessagePack clients
    done = await client.receive_skipping_pings()
    assert isinstance(done, CompletionMessage)
    assert done.result == "early"


@pytest.mark.parametrize(
    ("request_text", "error"),
    [
        ('{"protocol":"xml","version":1}\x1e', "The protocol 'xml' is not supported."),
        (
            '{"protocol":"json","version":9}\x1e',
            "The server does not support version 9 of the 'json' protocol.",
        ),
    ],
)
async def test_handshake_errors_are_answered_then_closed(hub_client, request_text, error):
    client = await hub_client(ECHO, handshake=False)
    await client.send_raw(request_text)
    frame = await client.communicator.receive_output(timeout=3)
    assert frame["text"] == f'{{"error":"{error}"}}\x1e'
    assert (await client.communicator.receive_output(timeout=3))["type"] == "websocket.close"


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
@pytest.mark.parametrize("version", [0, 1, 2])
async def test_handshake_accepts_every_version_up_to_the_protocols_own(hub_client, protocol, version):
    # ASP.NET: IsVersionSupported(version) => version <= Version (2). signalrcore asks for 0.
    client = await hub_client(ECHO, protocol=protocol, handshake=False)
    assert await client.handshake(version, binary=protocol == "messagepack") == {}
    assert (await client.invoke("Echo", version)).result == version


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_handshake_refuses_a_version_above_the_protocols_own(hub_client, protocol):
    client = await hub_client(ECHO, protocol=protocol, handshake=False)
    assert await client.handshake(3) == {
        "error": f"The server does not support version 3 of the '{protocol}' protocol."
    }
    assert (await client.communicator.receive_output(timeout=3))["type"] == "websocket.close"


async def test_malformed_handshake_is_answered_with_an_error(hub_client):
    client = await hub_client(ECHO, handshake=False)
    await client.send_raw("not json\x1e")
    frame = await client.communicator.receive_output(timeout=3)
    assert "error" in frame["text"]


@override_settings(CONDUIT_RT={"HANDSHAKE_TIMEOUT": 0.2})
async def test_handshake_timeout(hub_client):
    client = await hub_client(ECHO, handshake=False)
    frame = await client.communicator.receive_output(timeout=3)
    assert frame["text"] == '{"error":"Handshake was canceled."}\x1e'


@override_settings(CONDUIT_RT={"MAX_MESSAGE_SIZE": 1024})
async def test_oversized_message_closes_that_connection_only(hub_client):
    victim = await hub_client(ECHO)
    bystander = await hub_client(ECHO)
    await victim.send(InvocationMessage(target="Echo", arguments=["x" * 5000], invocation_id="1"))
    close = await victim.receive_skipping_pings()
    assert isinstance(close, CloseMessage)
    assert "maximum message size of 1024B" in close.error
    assert (await bystander.invoke("Echo", "still here")).result == "still here"


async def test_garbage_after_handshake_closes_with_a_clear_error(hub_client):
    client = await hub_client(ECHO)
    await client.send_raw('{"type":1,"target":5,"arguments":[]}\x1e')
    close = await client.receive_skipping_pings()
    assert isinstance(close, CloseMessage)
    assert close.error.startswith("Connection closed with an error. Invalid message:")
    assert "target" in close.error


async def test_streaming_items_then_completion(hub_client):
    client = await hub_client(ECHO)
    stream_id = await client.stream("Count", 3)
    items = [await client.receive_skipping_pings() for _ in range(4)]
    assert [m.item for m in items[:3]] == [0, 1, 2]
    assert all(isinstance(m, StreamItemMessage) and m.invocation_id == stream_id for m in items[:3])
    assert isinstance(items[3], CompletionMessage)
    assert items[3].error is None and not items[3].has_result


async def test_stream_cancel_still_completes(hub_client):
    client = await hub_client(ECHO)
    stream_id = await client.stream("Count", 1000, 0.05)
    first = await client.receive_skipping_pings()
    assert isinstance(first, StreamItemMessage)
    await client.send(CancelInvocationMessage(invocation_id=stream_id))
    while True:
        message = await client.receive_skipping_pings()
        if isinstance(message, CompletionMessage):
            break
        assert isinstance(message, StreamItemMessage)
    assert message.invocation_id == stream_id and message.error is None


async def test_stream_errors_and_invocation_kind_mismatches(hub_client):
    client = await hub_client(ECHO)
    await client.stream("BrokenStream")
    assert (await client.receive_skipping_pings()).item == 1
    done = await client.receive_skipping_pings()
    assert done.error == "An error occurred on the server while streaming results. HubException: stream broke"
    assert "streaming 'Count' method with a non-streaming" in (await client.invoke("Count", 1)).error
    await client.stream("Echo", 1)
    done = await client.receive_skipping_pings()
    assert "non-streaming 'Echo' method with a streaming invocation" in done.error


async def test_slow_invocation_does_not_block_streams_or_deliveries(hub_client):
    client = await hub_client(ECHO)
    await client.send(InvocationMessage(target="Slow", arguments=[0.5], invocation_id="slow"))
    await client.stream("Count", 2)
    first = await client.receive_skipping_pings(timeout=0.4)  # arrives while Slow still runs
    assert isinstance(first, StreamItemMessage)


@override_settings(CONDUIT_RT={"KEEP_ALIVE_INTERVAL": 0.1, "CLIENT_TIMEOUT": 60})
async def test_keep_alive_pings_an_idle_client(hub_client):
    client = await hub_client(ECHO)
    assert isinstance(await client.receive(timeout=2), PingMessage)
    assert isinstance(await client.receive(timeout=2), PingMessage)


@override_settings(CONDUIT_RT={"KEEP_ALIVE_INTERVAL": 0.05, "CLIENT_TIMEOUT": 0.3})
async def test_client_timeout_counts_from_the_first_ping(hub_client):
    client = await hub_client(ECHO)
    await client.send(PingMessage())
    while True:
        message = await client.receive(timeout=3)
        if isinstance(message, CloseMessage):
            break
    assert message.error == "Server timeout elapsed without receiving a message from the client."
    assert message.allow_reconnect is True


async def test_groups_with_metadata_others_caller_and_dedupe(hub_client):
    a = await hub_client(ECHO)
    b = await hub_client(ECHO)
    c = await hub_client(ECHO)
    await a.invoke("Join", "room 1")  # not a plain name: hashed onto Channels' rules
    await b.invoke("Join", "room 1")
    who = (await a.invoke("WhoAmI")).result
    assert who["groups"] == {"room 1": {"joinedBy": who["connectionId"]}}
    await c.invoke("Shout", "room 1", "hello")
    for member in (a, b):
        event = await member.next_event()
        assert event.target == "Shout"
        assert event.arguments[0]["text"] == "hello"
        assert set(event.arguments[0]) >= {"messageId", "timestamp", "retryCount", "fromConnection"}
    await b.invoke("Leave", "room 1")
    await c.invoke("Shout", "room 1", "again")
    assert (await a.next_event()).arguments[0]["text"] == "again"
    await a.invoke("TellOthers", "psst")
    assert (await b.next_event()).arguments[0]["text"] == "psst"
    assert (await c.next_event()).arguments[0]["text"] == "psst"
    await a.invoke("TellMe", "me")
    assert (await a.next_event()).arguments[0]["text"] == "me"
    # nothing else is queued for b: its next message is the answer to a fresh call
    assert (await b.invoke("Echo", 0)).result == 0 and b.events == []


async def test_lifecycle_hooks_run_and_a_failing_hook_closes_with_an_error(hub_client):
    EVENTS.clear()
    client = await hub_client(ECHO)
    who = (await client.invoke("WhoAmI")).result
    await client.close()  # returns once the consumer has finished its teardown
    assert ("established", who["connectionId"]) in EVENTS
    assert ("lost", who["connectionId"]) in EVENTS

    failing = await hub_client(ECHO, headers=[(b"user-agent", b"fail-on-connect")], handshake=False)
    await failing.send_raw('{"protocol":"json","version":1}\x1e')
    assert (await failing.communicator.receive_output(timeout=3))["text"] == "{}\x1e"
    close = await failing.receive()
    assert close == CloseMessage(error="Connection closed with an error.", allow_reconnect=False)


async def test_memberships_follow_joins_leaves_and_disconnects(hub_client):
    from hubs.delivery.members import get_members
    from hubs.naming import all_channel, connection_channel, group_channel

    client = await hub_client(ECHO)
    connection_id = (await client.invoke("WhoAmI")).result["connectionId"]
    registry = get_members()
    room = group_channel("echo", "room 9")
    assert connection_id in await registry.members([all_channel("echo")])
    assert await registry.members([connection_channel(connection_id)]) == {connection_id}
    await client.invoke("Join", "room 9")
    assert connection_id in await registry.members([room])
    await client.invoke("Leave", "room 9")
    assert connection_id not in await registry.members([room])
    await client.invoke("Join", "room 9")
    await client.close()  # returns once the consumer has finished its teardown
    assert connection_id not in await registry.members([room, all_channel("echo")])


def _errors_counted(where: str) -> float:
    from prometheus_client import REGISTRY

    from hubs.metrics import hub_metrics

    hub_metrics()  # registered
    return REGISTRY.get_sample_value("conduit_errors_total", {"where": where}) or 0.0


async def test_a_lone_surrogate_target_is_answered_and_the_connection_serves_on(hub_client):
    client = await hub_client(ECHO)
    # A JSON escape of a lone surrogate: valid JSON text, but no UTF-8 can carry it back.
    await client.send_raw('{"type":1,"invocationId":"bad","target":"\\ud800x","arguments":[]}\x1e')
    done = await client.receive_skipping_pings()
    assert isinstance(done, CompletionMessage) and done.invocation_id == "bad"
    assert done.error == (
        "Failed to invoke '\ufffdx' due to an error on the server. HubException: Method does not exist."
    )
    await client.send_raw('{"type":4,"invocationId":"s","target":"\\udfffStream","arguments":[]}\x1e')
    done = await client.receive_skipping_pings()
    assert done.invocation_id == "s" and "'\ufffdStream'" in done.error
    assert (await client.invoke("Echo", "after")).result == "after"


@override_settings(CONDUIT_RT={"HUB_FILTERS": []})
async def test_an_unencodable_result_is_answered_with_an_error_and_counted(hub_client):
    client = await hub_client(ECHO)
    errors = _errors_counted("invocation_result")
    await client.send_raw('{"type":1,"invocationId":"r","target":"Echo","arguments":["\\ud800"]}\x1e')
    done = await client.receive_skipping_pings()
    assert done.invocation_id == "r"
    assert done.error == "An unexpected error occurred invoking 'Echo' on the server."
    assert _errors_counted("invocation_result") == errors + 1
    assert (await client.invoke("Echo", "after")).result == "after"


async def test_an_invocation_that_cannot_be_answered_closes_the_connection_with_an_error(hub_client):
    client = await hub_client(ECHO)
    errors = _errors_counted("invocation")
    # Not even an error can name this invocation id: the connection is closed, not left mute.
    await client.send_raw('{"type":1,"invocationId":"\\ud800","target":"Missing","arguments":[]}\x1e')
    close = await client.receive_skipping_pings()
    assert close == CloseMessage(error="Connection closed with an error.", allow_reconnect=True)
    assert (await client.communicator.receive_output(timeout=3))["type"] == "websocket.close"
    assert _errors_counted("invocation") == errors + 1


async def test_messagepack_invalid_utf8_target_closes_with_a_specific_error(hub_client):
    import msgpack

    from hubs.protocol.varint import encode_varint

    client = await hub_client(ECHO, protocol="messagepack")
    # msgpack str 0xa2 followed by two bytes that are no UTF-8 (a lone surrogate, CESU-encoded: 3).
    body = msgpack.packb([1, {}, "bad", "T", [], []])
    body = body.replace(b"\xa1T", b"\xa3\xed\xa0\x80")
    await client.send_raw(encode_varint(len(body)) + body)
    close = await client.receive_skipping_pings()
    assert isinstance(close, CloseMessage)
    assert close.error.startswith("Connection closed with an error. Invalid message:")
    assert "utf-8" in close.error
