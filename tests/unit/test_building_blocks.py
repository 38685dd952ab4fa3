"""Small pieces: payload shaping, group naming, origin policy, token redaction, method registry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from django.test import override_settings

from hubs.errors import InvalidArguments
from hubs.logging import redact
from hubs.methods import collect_methods, hub_method
from hubs.naming import group_channel, validate_group_name
from hubs.payloads import build_body, camelize, to_wire
from hubs.security import origin_allowed

CHANNELS_NAME = re.compile(r"^[a-zA-Z\d\-_.]{1,99}$")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("progress_percentage", "progressPercentage"),
        ("taskId", "taskId"),
        ("a", "a"),
        ("_private_x", "_privateX"),
        ("is_retryable", "isRetryable"),
    ],
)
def test_camelize(key, expected):
    assert camelize(key) == expected


def test_to_wire_camelcases_nested_keys_and_omits_nulls():
    @dataclass
    class Progress:
        task_id: str
        progress_percentage: int
        message: str | None = None

    assert to_wire({"outer_key": [Progress("t", 5)], "none_here": None}) == {
        "outerKey": [{"taskId": "t", "progressPercentage": 5}]
    }
    assert to_wire({"keep_none": None}, omit_nulls=False) == {"keepNone": None}


def test_envelope_fields():
    body = build_body({"x": 1}, correlation_id=None, now=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    assert body["timestamp"] == "2026-01-02T03:04:05.678Z"
    assert body["retryCount"] == 0
    assert len(body["messageId"]) == 32
    assert "correlationId" not in body
    assert build_body({}, correlation_id="c", omit_nulls=False)["correlationId"] == "c"


@pytest.mark.parametrize("name", ["task-1", "room 1", "ünïcode", "a" * 200, "dots.are.escaped", "x" * 256])
def test_group_names_map_onto_channels_rules_without_collisions(name):
    channel = group_channel("tasks", validate_group_name(name))
    assert CHANNELS_NAME.match(channel), channel
    assert group_channel("tasks", "g.x") != group_channel("tasks", "x")


@pytest.mark.parametrize("bad", ["", 5, None, "x" * 257, "tab\there"])
def test_bad_group_names_are_refused(bad):
    with pytest.raises(InvalidArguments):
        validate_group_name(bad)


def test_origin_policy():
    assert origin_allowed(None, "example.com")
    assert origin_allowed("https://example.com", "example.com")
    assert not origin_allowed("https://evil.com", "example.com")
    assert not origin_allowed("null", "example.com")
    with override_settings(CONDUIT_RT={"ALLOWED_ORIGINS": ["https://.example.com", "http://localhost:3000"]}):
        assert origin_allowed("https://app.example.com", "api.internal")
        assert origin_allowed("https://example.com", "api.internal")
        assert not origin_allowed("http://app.example.com", "api.internal")
        assert origin_allowed("http://localhost:3000", "api.internal")
        assert not origin_allowed("http://localhost:3001", "api.internal")
    with override_settings(CONDUIT_RT={"ALLOWED_ORIGINS": ["*"]}):
        assert origin_allowed("https://anything.test", "x")


def test_tokens_are_redacted_from_log_text():
    line = "GET /hubs/tasks?id=abc&access_token=eyJ1Ijo:sig:xyz HTTP/1.1 Authorization: Bearer abc.def:ghi"
    assert redact(line) == "GET /hubs/tasks?id=abc&access_token=*** HTTP/1.1 Authorization: Bearer ***"


def test_method_registry_rules():
    class Good:
        @hub_method
        async def do_thing(self, a, b=1, *rest): ...

        @hub_method(name="Custom")
        def other(self): ...

    registry = collect_methods(Good)
    assert set(registry) == {"dothing", "custom"}
    spec = registry["dothing"]
    assert (spec.min_args, spec.max_args, spec.is_async, spec.streaming) == (1, None, True, False)
    assert registry["custom"].is_async is False

    with pytest.raises(TypeError, match="private"):

        class Private:
            @hub_method
            async def _secret(self): ...

        collect_methods(Private)

    with pytest.raises(TypeError, match="case-insensitive"):

        class Clash:
            @hub_method(name="Go")
            async def a(self): ...

            @hub_method(name="GO")
            async def b(self): ...

        collect_methods(Clash)
