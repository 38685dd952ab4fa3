"""``DiagnosticFilter``: a log line per hub method invocation, and error ids for unexpected errors."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from .errors import HubError, UnexpectedError
from .filters import CallNext, HubFilter, HubInvocation

logger = logging.getLogger(__name__)

_LINE = (
    "invoke hub=%s method=%s outcome=%s duration_ms=%.3f connection_id=%s invocation_id=%s correlation_id=%s"
)


def new_error_id() -> str:
    """A short id (12 hex digits) that names one unexpected error in the client's message and the log."""
    return secrets.token_hex(6)


class DiagnosticFilter(HubFilter):
    """Logs each invocation with its hub, method, connection id, invocation id, duration, outcome
    and correlation id, on the ``hubs.diagnostics`` logger:

    - ``ok`` at DEBUG (the line is only built when DEBUG is enabled: acks are a hot path);
    - ``hub_error`` (a ``HubError``, which the client sees as usual) at INFO, with its message;
    - ``error`` (any other exception) at ERROR with the traceback and a fresh error id; the
      exception becomes an ``UnexpectedError``, so the caller gets the generic error plus
      ``Error id: <id>.``, the same id as the log line, and the hub counts it as an error.

    Streams are logged when they end (``duration_ms`` to completion); a stream the client or the
    server cancelled is ``cancelled`` at DEBUG. Each record also carries the values as attributes
    (``hub``, ``method``, ``outcome``, ``duration`` in seconds, ``connection_id``,
    ``invocation_id``, ``correlation_id``, ``error_id``) for structured log handlers.
    """

    async def invoke(self, invocation: HubInvocation, call_next: CallNext) -> Any:
        started = time.perf_counter()
        try:
            result = await call_next(invocation)
        except HubError as exc:
            self._log_hub_error(invocation, exc, started)
            raise
        except Exception as exc:
            raise self._unexpected(invocation, exc, started) from exc
        if invocation.streaming:
            return self._watch(invocation, result, started)
        if logger.isEnabledFor(logging.DEBUG):
            self._log(logging.DEBUG, invocation, "ok", started)
        return result

    async def _watch(
        self, invocation: HubInvocation, stream: AsyncIterator[Any], started: float
    ) -> AsyncIterator[Any]:
        """Pass the stream's items through; log how and when it ended."""
        try:
            async for item in stream:
                yield item
        except HubError as exc:
            self._log_hub_error(invocation, exc, started)
            raise
        except Exception as exc:
            raise self._unexpected(invocation, exc, started) from exc
        except (asyncio.CancelledError, GeneratorExit):
            if logger.isEnabledFor(logging.DEBUG):
                self._log(logging.DEBUG, invocation, "cancelled", started)
            raise
        else:
            if logger.isEnabledFor(logging.DEBUG):
                self._log(logging.DEBUG, invocation, "ok", started)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _log_hub_error(self, invocation: HubInvocation, exc: HubError, started: float) -> None:
        if isinstance(exc, UnexpectedError):  # an inner filter logged it with its traceback
            self._log(logging.INFO, invocation, "error", started, error_id=exc.error_id)
        else:
            self._log(logging.INFO, invocation, "hub_error", started, error=exc.message)

    def _unexpected(self, invocation: HubInvocation, exc: Exception, started: float) -> UnexpectedError:
        error_id = new_error_id()
        self._log(logging.ERROR, invocation, "error", started, error_id=error_id, exc_info=exc)
        return UnexpectedError(error_id)

    @staticmethod
    def _log(
        level: int,
        invocation: HubInvocation,
        outcome: str,
        started: float,
        *,
        error_id: str | None = None,
        error: str | None = None,
        exc_info: BaseException | None = None,
    ) -> None:
        duration = time.perf_counter() - started
        fields = {
            "hub": invocation.hub_name,
            "method": invocation.method,
            "outcome": outcome,
            "duration": duration,
            "connection_id": invocation.connection_id,
            "invocation_id": invocation.invocation_id,
            "correlation_id": invocation.correlation_id,
            "error_id": error_id,
        }
        line = _LINE
        args: list[Any] = [
            invocation.hub_name,
            invocation.method,
            outcome,
            duration * 1000.0,
            invocation.connection_id,
            invocation.invocation_id or "-",
            invocation.correlation_id,
        ]
        if error_id is not None:
            line += " error_id=%s"
            args.append(error_id)
        if error is not None:
            line += " error=%r"
            args.append(error)
        logger.log(level, line, *args, exc_info=exc_info, extra=fields)
