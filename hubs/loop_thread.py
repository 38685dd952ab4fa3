"""One long-lived event loop per process, in a daemon thread, for async work from sync code.

``async_to_sync`` outside a server starts a new event loop for every call, and every Redis client
(channels-redis' and Conduit RT's own, which belong to a loop) is then reopened for every call. A
Celery worker that runs a retry pass every second, or sync code that sends in bulk, instead hands
its coroutines to this loop and keeps its connections. Started on first use, again after a fork
(Celery's prefork children each get their own).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread; ``run`` submits a coroutine and waits for it."""

    def __init__(self, name: str = "conduit-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=serve, name=self.name, daemon=True).start()
                if not ready.wait(10):
                    raise RuntimeError("The background event loop did not start.")
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop; wait at most ``timeout`` seconds (then cancel it and raise
        ``TimeoutError``). Must not be called from the loop's own thread."""
        loop = self._ensure()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


_shared = LoopThread()


def loop_thread() -> LoopThread:
    """The process's shared background loop."""
    return _shared
