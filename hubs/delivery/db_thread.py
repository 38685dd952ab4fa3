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
own connection, as before: ``run_in_db_thread`` hands its calls to ``database_sync_to_async``,
which runs them in the caller's thread, inside the caller's transaction if one is open (a
write from another connection could wait on that transaction's locks under SQLite).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import connections

from ..metrics import hub_metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

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
            try:
                result: Any = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
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


_thread = DatabaseThread()

_sync_caller: contextvars.ContextVar[bool] = contextvars.ContextVar("conduit_sync_caller", default=False)


@contextmanager
def sync_caller() -> Iterator[None]:
    """Around an ``async_to_sync`` call from synchronous code: the database writes it makes run
    on the calling thread's connection (``database_sync_to_async``), not in the delivery thread."""
    token = _sync_caller.set(True)
    try:
        yield
    finally:
        _sync_caller.reset(token)


def to_sync(afn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """``async_to_sync(afn)`` for synchronous callers, inside ``sync_caller()``."""

    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        with sync_caller():
            return async_to_sync(afn)(*args, **kwargs)

    return functools.wraps(afn)(call)


async def run_in_db_thread(fn: Callable[[], T]) -> T:
    """Run ``fn()`` (ORM code) in the process's delivery database thread, or on the caller's own
    connection inside ``sync_caller()``."""
    if _sync_caller.get():
        return await database_sync_to_async(fn)()
    return await _thread.run(fn)
