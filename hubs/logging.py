"""Logging helpers: a filter that keeps access tokens out of every log line."""

from __future__ import annotations

import logging
import re

_TOKEN_PATTERNS = (
    re.compile(r"(access_token=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"(Bearer\s+)[A-Za-z0-9._:~+/=-]+", re.IGNORECASE),
)


def redact(text: str) -> str:
    """Replace access tokens in query strings and ``Authorization`` headers by ``***``."""
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


class RedactTokensFilter(logging.Filter):
    """Rewrites a record with tokens redacted (install it on handlers).

    The string arguments are redacted one by one, so a formatter that reads ``record.args``
    (uvicorn's access formatter unpacks them) still finds them; a token that only appears
    once the message is formatted (say ``"access_token=%s"``) replaces the message by its
    redacted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


class RedactingStream:
    """A text stream wrapper that redacts tokens; used for daphne's access log (uvicorn's log
    handlers get ``RedactTokensFilter``)."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(redact(text))  # type: ignore[attr-defined, no-any-return]

    def flush(self) -> None:
        self._stream.flush()  # type: ignore[attr-defined]
