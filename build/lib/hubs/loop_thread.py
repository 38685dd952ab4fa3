"""One long-lived event loop per process, in a daemon thread, for async work from sync code.

``async_to_sync`` outside a server starts a new event loop for every call, and every Redis client
(channels-redis' and Conduit RT's own, which belong to a loop) is then reopened for every call. A
Celery worker that runs a retry pass every second, or sync code that sends (``ClientProxy.send``,
``task_events.task_progress``…), instead hands its coroutines to this loop and keeps its
connections: a sync send costs 3 to 6 times less than through ``async_to_sync`` (``docs/hubs.md``).
Started on first use, again after a fork (Celery's prefork children each get their own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from .delivery.db_thread import CallerThread, lend_caller_thread

T = TypeVar("T")
P = ParamSpec("P")

#: How long a synchronous send (``to_sync``) waits before it gives up with ``TimeoutError``.
SYNC_TIMEOUT = 60.0


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

    def run_lending_thread(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """``run``, with the calling thread running the coroutine's database calls meanwhile
        (``CallerThread``): on the caller's connection, inside its transaction if it has one."""
        loop = self._ensure()
        caller = CallerThread()
        context = contextvars.copy_context()
        context.run(lend_caller_thread, caller)
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        tasks: list[asyncio.Task[T]] = []

        def finished(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                done.cancel()
            elif task.exception() is not None:
                done.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                done.set_result(task.result())
            caller.wake()

        def start() -> None:
            task = loop.create_task(coro, context=context)
            task.add_done_callback(finished)
            tasks.append(task)

        loop.call_soon_threadsafe(start)
        try:
            caller.serve_until(done, timeout)
        except TimeoutError:
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in tasks])
            raise
        return done.result()


_shared = LoopThread()


def loop_thread() -> LoopThread:
    """The process's shared background loop."""
    return _shared


def to_sync(afn: Callable[P, Awaitable[T]], *, timeout: float = SYNC_TIMEOUT) -> Callable[P, T]:
    """A synchronous form of ``afn`` that runs it on the process loop (its Redis and channel
    layer connections are kept from call to call), while the calling thread runs its database
    calls. For views, signals, commands and Celery tasks; not for code inside an event loop."""

    @functools.wraps(afn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                f"{afn.__qualname__} was called synchronously inside an event loop: await its async form."
            )
        return loop_thread().run_lending_thread(_awaited(afn, *args, **kwargs), timeout)

    return call


async def _awaited(afn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    return await afn(*args, **kwargs)
