"""``Background``: the tasks one connection runs beside its receive loop (the invocation worker,
keep-alive, streams, the handshake deadline), kept so that they end with the connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .metrics import hub_metrics

logger = logging.getLogger(__name__)


class Background:
    """A connection's tasks; ``label`` names the connection in the log."""

    __slots__ = ("_label", "_tasks")

    def __init__(self, label: str) -> None:
        self._label = label
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` beside the connection; a failure is logged and counted."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def stop(self, wait: float) -> None:
        """Cancel every task but the running one, and wait up to ``wait`` seconds for them."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=wait)
            if stuck:
                logger.warning("%s: %d task(s) did not stop within %s s.", self._label, len(stuck), wait)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            hub_metrics().errors.labels(where="background_task").inc()
            logger.error("%s: background task failed.", self._label, exc_info=task.exception())
