"""Acknowledgements of one server process, cleared together: one Redis call for all the acks that
arrive while the previous call is in flight (or in the same loop turn).

At fan-out every recipient acks every acknowledged message, so a server clears thousands of
pending entries a second; one script call per batch instead of one per ack is most of what that
costs. Each caller still gets its own answer (whether its entry was pending).
"""

from __future__ import annotations

import asyncio

from .pending import get_pending


class AckBatcher:
    """Collects (connection id, message id) acks of one event loop and clears them in batches."""

    def __init__(self) -> None:
        # Each waiter: the pairs of one call and the future that gets their answers.
        self._waiting: list[tuple[list[tuple[str, str]], asyncio.Future[list[bool]]]] = []
        self._flushing = False

    async def ack(self, connection_id: str, message_id: str) -> bool:
        """Clear the entry (batched with others); True if it was pending."""
        (cleared,) = await self.ack_many(connection_id, [message_id])
        return cleared

    async def ack_many(self, connection_id: str, message_ids: list[str]) -> list[bool]:
        """Clear several entries of one connection (batched with others); for each id, whether
        it was pending. One future per call, however many ids it carries."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        self._waiting.append(([(connection_id, m) for m in message_ids], future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._start)  # after this turn's other acks
        return await future

    def _start(self) -> None:
        asyncio.get_running_loop().create_task(self._flush(), name="conduit-ack-batch")

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                pairs = [pair for call, _ in batch for pair in call]
                try:
                    cleared = await get_pending().ack_many(pairs)
                except Exception as exc:  # noqa: BLE001 - handed to every caller, which logs it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for call, future in batch:
                    if not future.done():
                        future.set_result(cleared[start : start + len(call)])
                    start += len(call)
        finally:
            self._flushing = False
