"""``Confirmations``: ``send_with_confirmation`` for one connection: a message to the caller, and
a wait for its ``AcknowledgeMessage`` (or ``NackMessage``) within a timeout.

The pending entry is registered first, like every acknowledged send, due far enough out that no
retry pass sends it again while the caller waits (it has no stored copy to resend anyway); it is
removed either way, and the message is never retried: the caller decides what a False means.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .conf import conduit_settings
from .delivery.pending import get_pending
from .outbound import encode_outbound
from .payloads import build_body
from .session import ProtocolSession


class Confirmations:
    """The confirmations one connection waits for."""

    __slots__ = ("_session", "_waiting")

    def __init__(self, session: ProtocolSession) -> None:
        self._session = session
        self._waiting: dict[str, asyncio.Future[bool]] = {}

    async def send(
        self,
        connection_id: str,
        user_id: str | None,
        method: str,
        payload: Any,
        timeout: float,  # noqa: ASYNC109 - the documented API (send_with_confirmation)
        correlation_id: str | None,
    ) -> bool:
        """Send ``method(payload)`` and wait; True if acked in time, else False."""
        body = build_body(
            payload, correlation_id=correlation_id, requires_ack=True, omit_nulls=conduit_settings.OMIT_NULLS
        )
        outbound = encode_outbound(method, body)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[outbound.message_id] = future
        pending = get_pending()
        await pending.register(
            outbound.message_id, {connection_id: user_id}, time.time() + timeout + _margin()
        )
        try:
            await self._session.write_outbound(outbound)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        finally:
            self._waiting.pop(outbound.message_id, None)
            await pending.ack(connection_id, outbound.message_id)

    def confirm(self, message_id: str, acked: bool) -> bool:
        """The client acked (True) or nacked (False) ``message_id``; whether a confirmation was
        waiting for it."""
        future = self._waiting.get(message_id)
        if future is None or future.done():
            return False
        future.set_result(acked)
        return True

    def cancel_all(self) -> None:
        """The connection closed: every waiting confirmation answers False."""
        for future in self._waiting.values():
            if not future.done():
                future.set_result(False)


def _margin() -> float:
    """Seconds past a confirmation's timeout before a retry pass could see its entry."""
    return max(60.0, float(conduit_settings.ACK_TIMEOUT))
