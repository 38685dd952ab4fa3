"""The settings object: defaults, overrides, env parsing, loud failures, reload."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from hubs.conf import conduit_settings, environ_overrides


def test_documented_defaults():
    assert conduit_settings.KEEP_ALIVE_INTERVAL == 15.0
    assert conduit_settings.CLIENT_TIMEOUT == 30.0
    assert conduit_settings.HANDSHAKE_TIMEOUT == 15.0
    assert conduit_settings.MAX_MESSAGE_SIZE == 512 * 1024


def test_override_and_reload():
    with override_settings(CONDUIT_RT={"KEEP_ALIVE_INTERVAL": 2.0}):
        assert conduit_settings.KEEP_ALIVE_INTERVAL == 2.0
    assert conduit_settings.KEEP_ALIVE_INTERVAL == 15.0


def test_unknown_keys_fail_loudly():
    with (
        override_settings(CONDUIT_RT={"KEEP_ALIVE": 1}),
        pytest.raises(ImproperlyConfigured, match="KEEP_ALIVE"),
    ):
        _ = conduit_settings.CLIENT_TIMEOUT
    with pytest.raises(AttributeError):
        _ = conduit_settings.NOT_A_SETTING


def test_import_strings_are_resolved_and_bad_paths_named():
    from hubs.auth.tokens import validate_signed_token

    assert [validate_signed_token] == conduit_settings.TOKEN_VALIDATORS
    with (
        override_settings(CONDUIT_RT={"TOKEN_VALIDATORS": ["nowhere.validator"]}),
        pytest.raises(ImproperlyConfigured, match=r"nowhere\.validator"),
    ):
        _ = conduit_settings.TOKEN_VALIDATORS


def test_environment_overrides_are_typed():
    parsed = environ_overrides(
        {
            "CONDUIT_RT_KEEP_ALIVE_INTERVAL": "0.5",
            "CONDUIT_RT_MAX_MESSAGE_SIZE": "1024",
            "CONDUIT_RT_ENABLE_DETAILED_ERRORS": "yes",
            "CONDUIT_RT_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "UNRELATED": "x",
        }
    )
    assert parsed == {
        "KEEP_ALIVE_INTERVAL": 0.5,
        "MAX_MESSAGE_SIZE": 1024,
        "ENABLE_DETAILED_ERRORS": True,
        "ALLOWED_ORIGINS": ["https://a.example", "https://b.example"],
    }
    with pytest.raises(ImproperlyConfigured, match="CONDUIT_RT_NOPE"):
        environ_overrides({"CONDUIT_RT_NOPE": "1"})
    with pytest.raises(ImproperlyConfigured, match="CONDUIT_RT_MAX_MESSAGE_SIZE"):
        environ_overrides({"CONDUIT_RT_MAX_MESSAGE_SIZE": "big"})
