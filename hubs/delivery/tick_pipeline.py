"""``TickPipeline``: the Redis commands that the coroutines of one event loop issue during one
iteration of it, sent together in one pipeline (no transaction).

A connect storm runs dozens of connects at once, each a few small writes to the same store
(its negotiated record, its memberships, its lease): one round trip each is what a connect
spent most of its Redis time on. Through a ``TickPipeline`` a caller queues its commands
(``run(build)``: ``build(pipe)`` adds them) and waits; the first caller of an iteration
schedules the flush for the next one, so everything queued meanwhile goes in the same round
trip, and each caller gets its own commands' results (or the first error among them) back.
A lone caller pays one loop iteration more than a direct command.

Each call's commands stay together and in order, but two calls are not atomic together (use a
transaction or a script for that); a failure of the round trip itself reaches every caller of
that batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

#: The most calls one round trip carries; more wait for the next.
MAX_CALLS = 500


class TickPipeline:
    """Batches the calls of one loop on one ``redis.asyncio.Redis`` client."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._waiting: list[tuple[Callable[[Any], None], asyncio.Future[list[Any]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, build: Callable[[Any], None]) -> list[Any]:
        """Queue the commands ``build(pipe)`` adds to a pipeline; their results, in order, once
        the iteration's round trip is back. Raises the first error among them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((build, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        batch, self._waiting = self._waiting[:MAX_CALLS], self._waiting[MAX_CALLS:]
        if self._waiting:
            asyncio.get_running_loop().call_soon(self._start)
        task = asyncio.get_running_loop().create_task(self._flush(batch), name="conduit-redis-batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[tuple[Callable[[Any], None], asyncio.Future[list[Any]]]]) -> None:
        sizes: list[int | BaseException] = []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for build, _ in batch:
                    before = len(pipe.command_stack)
                    try:
                        build(pipe)
                    except Exception as exc:  # noqa: BLE001 - handed to that caller
                        del pipe.command_stack[before:]
                        sizes.append(exc)
                    else:
                        sizes.append(len(pipe.command_stack) - before)
                results = await pipe.execute(raise_on_error=False) if pipe.command_stack else []
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        position = 0
        for (_, future), size in zip(batch, sizes, strict=True):
            if isinstance(size, BaseException):
                outcome: list[Any] | BaseException = size
            else:
                outcome = results[position : position + size]
                position += size
                outcome = next((r for r in outcome if isinstance(r, Exception)), outcome)
            if future.done():  # its caller was cancelled: its commands ran anyway
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
