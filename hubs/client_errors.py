"""The error texts clients see, worded as ASP.NET Core SignalR words them (clients match on them).

Every text goes through ``_safe``, as they quote client data (a target, an invocation id) and
exception texts: a lone surrogate there (JSON allows ``"\\ud800"``) is neither UTF-8 for JSON nor a
MessagePack string, so it becomes U+FFFD, as .NET's UTF-8 encoder writes it. Nothing else changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec

_P = ParamSpec("_P")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _safe(build: Callable[_P, str]) -> Callable[_P, str]:
    """Make the text ``build`` returns encodable in both protocols."""

    @wraps(build)
    def safe(*args: _P.args, **kwargs: _P.kwargs) -> str:
        return _SURROGATES.sub("\ufffd", build(*args, **kwargs))

    return safe


def _failed(target: str) -> str:
    return f"Failed to invoke '{target}' due to an error on the server."


@_safe
def method_missing(target: str) -> str:
    return f"{_failed(target)} HubException: Method does not exist."


@_safe
def streaming_mismatch(target: str, *, method_streams: bool) -> str:
    if method_streams:
        return (
            f"The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."
        )
    return f"The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."


@_safe
def uploads_unsupported(target: str) -> str:
    return f"{_failed(target)} HubException: Client-to-server streaming is not supported."


@_safe
def wrong_argument_count(target: str, given: int, expected: str) -> str:
    return (
        f"{_failed(target)} InvalidDataException: "
        f"Invocation provides {given} argument(s) but target expects {expected}."
    )


@_safe
def too_many_pending(target: str) -> str:
    return f"Failed to invoke '{target}': too many pending invocations."


@_safe
def rate_limited(target: str, retry_after: float) -> str:
    return f"Failed to invoke '{target}': rate limit exceeded; retry in {max(1, round(retry_after))} s."


@_safe
def invocation_failed(
    target: str, *, hub_error: str | None = None, detail: str | None = None, error_id: str | None = None
) -> str:
    text = f"An unexpected error occurred invoking '{target}' on the server."
    if hub_error is not None:
        return f"{text} HubException: {hub_error}"
    return _unexpected(text, detail, error_id)


@_safe
def stream_failed(
    *, hub_error: str | None = None, detail: str | None = None, error_id: str | None = None
) -> str:
    text = "An error occurred on the server while streaming results."
    if hub_error is not None:
        return f"{text} HubException: {hub_error}"
    return _unexpected(text, detail, error_id)


def _unexpected(text: str, detail: str | None, error_id: str | None) -> str:
    """The generic text, then the error id the server log names (``UnexpectedError``), then the
    exception's type and text (only with ``ENABLE_DETAILED_ERRORS``)."""
    if error_id:
        text = f"{text} Error id: {error_id}."
    return f"{text} {detail}" if detail else text


@_safe
def duplicate_invocation_id(invocation_id: str) -> str:
    return f"Invocation ID '{invocation_id}' is already in use."
