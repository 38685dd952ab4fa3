"""``Outbox``: one connection's messages to its ASGI server, in order, bounded in bytes, and never
a wait for whoever writes.

The router hands a group message to its members one after the other, so a member whose write
waits would hold up every member behind it: uvicorn's ``send`` waits while a client's socket
buffer is full, and a client that stops reading would stall its whole process. Here a write that
the server takes at once (daphne always, uvicorn while the buffer has room) costs one step of its
coroutine and no task; the first write the server makes wait is finished by a writer task, and
the writes after it queue behind it until the writer has sent them all.

What the client has not read is bounded: the bytes queued here plus what the server's transport
holds (``hubs.backpressure``). Past ``limit`` the outbox calls ``on_full`` once and takes no more
writes; its owner decides what happens (``hubs.session``: the slow-consumer close).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .backpressure import Transport

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Seconds between two looks at the backlog while ``drain`` waits.
DRAIN_POLL = 0.005


class Outbox:
    """The writes of one connection through ``send`` (the ASGI send callable)."""

    __slots__ = (
        "_on_error",
        "_on_full",
        "_queue",
        "_queued",
        "_send",
        "_writer",
        "full",
        "limit",
        "transport",
    )

    def __init__(
        self,
        send: Send,
        *,
        limit: int,
        transport: Transport | None,
        on_full: Callable[[], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self._send = send
        self.limit = limit
        self.transport = transport
        self._on_full = on_full
        self._on_error = on_error
        # What waits behind the writer task; there only while one runs (most connections never
        # have one, and an empty deque is about 600 bytes).
        self._queue: deque[tuple[dict[str, Any], int]] | None = None
        self._queued = 0
        self._writer: asyncio.Task[None] | None = None
        #: True once the limit was passed: no more writes are taken.
        self.full = False

    @property
    def queued(self) -> int:
        """Bytes waiting here for the server to take them."""
        return self._queued

    def backlog(self) -> int:
        """Bytes the client has not read: queued here plus held by the server's transport."""
        return self._queued + (self.transport.backlog() if self.transport is not None else 0)

    def push(self, message: dict[str, Any], size: int, *, force: bool = False) -> None:
        """Hand ``message`` (``size`` bytes) to the server now, or queue it behind the writes the
        server is still taking. ``force``: past the limit too (the closing messages). Raises what
        the server's ``send`` raises at once (a socket already closed)."""
        if self.full and not force:
            return
        if self._writer is None:
            coro = self._send(message)
            if not asyncio.iscoroutine(coro):  # an awaitable of another kind (a wrapping middleware's)
                self._writer = asyncio.get_running_loop().create_task(self._write_awaitable(coro))
                return
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                if (
                    self.limit
                    and self.transport is not None
                    and not force
                    and self.transport.backlog() > self.limit
                ):
                    self._overflow()
                return
            self._writer = asyncio.get_running_loop().create_task(self._write(coro, waiting_on))  # type: ignore[arg-type]
            return
        if self.limit and not force and self.backlog() + size > self.limit:
            self._overflow()
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append((message, size))
        self._queued += size

    async def drain(self, below: int) -> bool:
        """Wait until the client's backlog is at most ``below`` bytes (True), or the outbox is
        full (False); the caller bounds the wait. Polled: neither server says when its buffer
        drains (daphne's Twisted transport, uvicorn's asyncio one)."""
        while self.backlog() > below:
            if self.full:
                return False
            await asyncio.sleep(DRAIN_POLL)
        return True

    def clear(self) -> None:
        """Drop what is queued (a slow consumer's backlog; it resumes from its history)."""
        self._queue = None
        self._queued = 0

    def abort(self) -> None:
        """Stop writing: the writer task is cancelled, the queue dropped."""
        self.clear()
        if self._writer is not None:
            self._writer.cancel()

    def _overflow(self) -> None:
        if not self.full:
            self.full = True
            self._on_full()

    async def _write_awaitable(self, awaitable: Awaitable[None]) -> None:
        await self._write(_awaited(awaitable), None)

    async def _write(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        """Finish the write the server made wait, then send what queued behind it."""
        try:
            await _finish(coro, waiting_on)
            while self._queue:
                message, size = self._queue.popleft()
                self._queued -= size
                await self._send(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the owner logs and counts it (on_error)
            self._on_error(exc)
        finally:
            self._writer = None
            if not self._queue:
                self._queue = None


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _finish(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Run ``coro`` to its end from where it stopped: it yielded ``waiting_on`` (the future it
    waits for, as asyncio's coroutines do; None for a bare yield), as a task would."""
    while True:
        try:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((waiting_on,))
        except asyncio.CancelledError:
            if waiting_on is not None:
                waiting_on.cancel()
            coro.close()
            raise
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
