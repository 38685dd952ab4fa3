"""The delivery path's database calls, run one at a time in one thread per process that keeps its
database connection open while calls keep coming.

An acknowledged send writes its ``AckedMessage`` row before it returns (``acked.persist``), so a
sender looping over ``asend(ack=True)`` waits for one database write per message. Through
Channels' ``database_sync_to_async`` every such write opened a new connection and closed it
again (``CONN_MAX_AGE = 0``, which Django asks for under ASGI, where request threads come and
go): with SQLite that was about half of the write's cost, and a burst of acknowledged sends ran
about 15 % slower for it (``bench/acked.py``).

This thread is not a request thread: it lives as long as the process, so its connection is one
connection per process, as with a persistent connection in a long-lived worker. It is closed
after ``idle`` seconds without a call (so an idle server, a test database teardown or a
PostgreSQL restart does not meet a connection left open), after an error that left it unusable,
and if the autocommit state was changed. ``CONN_MAX_AGE`` still governs every other thread.

Calls run in the caller's context (``contextvars``), one after another, in the order they came.

A synchronous caller (``ClientProxy.send`` from a view, a task, a command) keeps writing on its
own connection: while it waits for its send on the process loop (``hubs.loop_thread.to_sync``),
its thread runs the send's database calls (``CallerThread``), inside the caller's transaction if
one is open (a write from another connection could wait on that transaction's locks under
SQLite).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import connections

from ..metrics import hub_metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds without a call after which the thread closes its connections.
IDLE_CLOSE = 1.0

_Call = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class DatabaseThread:
    """One worker thread with its own connections; ``await run(fn)`` runs ``fn()`` there."""

    def __init__(self, *, idle: float = IDLE_CLOSE, name: str = "conduit-db") -> None:
        self.idle = idle
        self.name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Call] | None = None
        self._pid: int | None = None

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in the thread (in the caller's context); its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()
        self._calls().put((lambda: context.run(fn), loop, future))
        return await future

    def _calls(self) -> queue.SimpleQueue[_Call]:
        # Started on first use, and again in a forked child (threads do not survive a fork).
        with self._lock:
            if self._queue is None or self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(target=self._serve, args=(self._queue,), name=self.name, daemon=True).start()
            return self._queue

    def _serve(self, calls: queue.SimpleQueue[_Call]) -> None:
        while True:
            try:
                fn, loop, future = calls.get(timeout=self.idle)
            except queue.Empty:
                _close_all()
                fn, loop, future = calls.get()
            _check_connections()
            _run_and_settle(fn, loop, future)


def _run_and_settle(
    fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
) -> None:
    """Run ``fn`` in this thread; hand its result or exception to ``future`` on ``loop``."""
    try:
        result: Any = fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
        _settle(loop, future, exc, failed=True)
    else:
        _settle(loop, future, result, failed=False)


def _settle(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any, *, failed: bool
) -> None:
    def settle() -> None:
        if future.done():  # the caller was cancelled meanwhile
            return
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed: nobody waits for this any more
        logger.warning("A database call finished after its event loop closed.")
        hub_metrics().errors.labels(where="db_thread").inc()


def _check_connections() -> None:
    """Before a call: drop a connection that an error left unusable, or whose autocommit state
    was changed (what Django's own check does at a request's start, minus the age limit)."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is None:
            continue
        if connection.get_autocommit() != connection.settings_dict["AUTOCOMMIT"]:
            connection.close()
        elif connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()


def _close_all() -> None:
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except Exception:  # closing a broken connection: nothing more to do with it
            logger.exception("Closing the delivery thread's database connection failed.")
            hub_metrics().errors.labels(where="db_thread").inc()


class CallerThread:
    """A synchronous caller's thread, lending itself to the database calls of the coroutine it
    waits for (``hubs.loop_thread.to_sync``): they run there, on the caller's own connection and
    inside its transaction, as if the caller had made them."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()

    async def run(self, fn: Callable[[], T]) -> T:
        """(In the loop) hand ``fn`` to the caller's thread; its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((fn, loop, future))
        return await future

    def wake(self) -> None:
        """(From any thread) make ``serve_until`` look at its future again."""
        self._calls.put(None)

    def serve_until(self, done: concurrent.futures.Future[Any], timeout: float) -> None:
        """(In the caller's thread) run the calls handed over until ``done`` is; raises
        ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"The call did not finish within {timeout} s.")
            try:
                item = self._calls.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                continue
            _run_and_settle(*item)


_caller: contextvars.ContextVar[CallerThread | None] = contextvars.ContextVar("conduit_caller", default=None)


def lend_caller_thread(caller: CallerThread) -> None:
    """In the context a coroutine will run in: its database calls go to ``caller``."""
    _caller.set(caller)


_thread = DatabaseThread()


async def run_in_db_thread(fn: Callable[[], T]) -> T:
    """Run ``fn()`` (ORM code) in the process's delivery database thread, or in the thread of a
    synchronous caller that waits for this coroutine (``CallerThread``)."""
    caller = _caller.get()
    if caller is not None:
        return await caller.run(fn)
    return await _thread.run(fn)
