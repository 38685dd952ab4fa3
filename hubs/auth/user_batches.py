"""``UserBatches``: the user loads of one event loop iteration made in one worker-thread call.

A restarted server process meets every user for the first time: each connect's user comes from
the database, and one ORM lookup through ``database_sync_to_async`` (a thread hop, the
connection check before and after, the query) cost about 3.5 ms of server CPU per user in a
connect storm, twice the rest of the connect. A two-step validator that can load many users at
once (``load_users(keys) -> {key: user}``, as ``SignedTokenValidator`` does with one
``pk__in`` query) gets its loads batched here: the keys asked for during one loop iteration go
in one call, the same key asked for twice waits for the same load, and each caller gets its
user (None for a key the validator did not return). One per loop and validator, kept by
``LoopRuntime.user_batches``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

from channels.db import database_sync_to_async

#: The most keys one call loads; more wait for the next.
MAX_KEYS = 500


class UserBatches:
    """Batches the ``load_users`` calls of one validator on one loop."""

    def __init__(self, load_users: Callable[[list[Any]], dict[Any, Any]]) -> None:
        self._load_users = load_users
        self._waiting: dict[Hashable, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self, key: Hashable) -> Any:
        """The user ``key`` names (None when there is none), loaded with the other keys asked
        for in this loop iteration."""
        found = self._waiting.get(key)
        if found is None:
            loop = asyncio.get_running_loop()
            found = self._waiting[key] = loop.create_future()
            if len(self._waiting) == 1:
                loop.call_soon(self._start)
        return await asyncio.shield(found)

    def _start(self) -> None:
        keys = list(self._waiting)[:MAX_KEYS]
        batch = {key: self._waiting.pop(key) for key in keys}
        loop = asyncio.get_running_loop()
        if self._waiting:
            loop.call_soon(self._start)
        task = loop.create_task(self._load(batch), name="conduit-user-batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, batch: dict[Hashable, asyncio.Future[Any]]) -> None:
        try:
            users = await database_sync_to_async(self._load_users)(list(batch))
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for key, future in batch.items():
            if not future.done():
                future.set_result(users.get(key))
