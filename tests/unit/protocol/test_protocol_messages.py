"""Tests for the hub message dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from hubs.protocol import (
    CompletionMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
)


def test_message_type_values():
    assert [m.name for m in MessageType] == [
        "INVOCATION",
        "STREAM_ITEM",
        "COMPLETION",
        "STREAM_INVOCATION",
        "CANCEL_INVOCATION",
        "PING",
        "CLOSE",
        "ACK",
        "SEQUENCE",
    ]
    assert [int(m) for m in MessageType] == list(range(1, 10))


def test_completion_constructors():
    assert CompletionMessage.with_result("1", None) == CompletionMessage("1", result=None, has_result=True)
    assert CompletionMessage.with_result("1", 5).result == 5
    error = CompletionMessage.with_error("1", "boom")
    assert (error.error, error.has_result) == ("boom", False)
    empty = CompletionMessage.empty("1")
    assert (empty.result, empty.error, empty.has_result) == (None, None, False)


def test_completion_rejects_result_and_error():
    with pytest.raises(ValueError, match="both a result and an error"):
        CompletionMessage("1", error="x", has_result=True)


def test_completion_rejects_result_without_flag():
    with pytest.raises(ValueError, match="with_result"):
        CompletionMessage("1", result=5)


def test_messages_are_frozen_with_slots():
    message = InvocationMessage("target", [1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.target = "other"  # type: ignore[misc]
    assert not hasattr(message, "__dict__")
    assert message.message_type is MessageType.INVOCATION
    assert PingMessage().message_type is MessageType.PING
