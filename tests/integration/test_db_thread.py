"""The delivery database thread: calls run there in order with the caller's context, the connection
is kept between calls and closed when idle or broken, and an exception reaches the caller."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from django.db import connection, connections
from django.db.models.signals import pre_save
from django.utils import timezone

from hubs.delivery.db_thread import DatabaseThread
from hubs.models import AckedMessage
from hubs.send import get_hub_context

pytestmark = [pytest.mark.django_db(transaction=True)]

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def _row(message_id: str) -> AckedMessage:
    return AckedMessage.objects.create(
        id=message_id,
        hub="h",
        namespace="n",
        layer_alias="default",
        method="M",
        body={},
        targets=[],
        exclude=[],
        publish_after=timezone.now(),
    )


async def test_calls_run_in_one_other_thread_in_order_with_the_callers_context():
    db = DatabaseThread(idle=60)
    seen: list[tuple[int, str, int]] = []
    marker.set("from the caller")

    def call(i: int):
        seen.append((i, marker.get(), threading.get_ident()))
        return i * 2

    results = await asyncio.wait_for(asyncio.gather(*(db.run(lambda i=i: call(i)) for i in range(20))), 10)
    assert results == [i * 2 for i in range(20)]
    assert [i for i, _, _ in seen] == list(range(20))
    assert {m for _, m, _ in seen} == {"from the caller"}
    threads = {t for _, _, t in seen}
    assert len(threads) == 1 and threads != {threading.get_ident()}


@pytest.fixture
def closes(monkeypatch) -> list[int]:
    """Thread ids of each close of a database connection. (The test database is SQLite in
    memory, whose connections Django never really closes, so the calls are what can be seen.)"""
    calls: list[int] = []
    real = type(connections["default"]).close

    def close(self):
        calls.append(threading.get_ident())
        return real(self)

    monkeypatch.setattr(type(connections["default"]), "close", close)
    return calls


async def test_the_connection_is_kept_between_calls_and_closed_when_idle(closes):
    db = DatabaseThread(idle=0.2)
    opened: list[tuple[object, int]] = []

    def write(message_id: str) -> None:
        _row(message_id)
        opened.append((connection.connection, threading.get_ident()))

    await asyncio.wait_for(asyncio.gather(db.run(lambda: write("m1")), db.run(lambda: write("m2"))), 10)
    (first, thread), (second, _) = opened
    assert first is not None and first is second  # one connection for both writes
    assert thread not in closes

    # Nothing more comes: the thread closes it (polled, with a deadline).
    deadline = asyncio.get_running_loop().time() + 10
    while thread not in closes:
        assert asyncio.get_running_loop().time() < deadline, "the idle connection was never closed"
        await asyncio.sleep(0.05)
    assert await asyncio.wait_for(db.run(lambda: AckedMessage.objects.count()), 10) == 2


async def test_an_exception_reaches_the_caller_and_the_thread_goes_on():
    db = DatabaseThread(idle=60)
    await asyncio.wait_for(db.run(lambda: _row("dup")), 10)
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        await asyncio.wait_for(db.run(lambda: _row("dup")), 10)
    assert await asyncio.wait_for(db.run(lambda: AckedMessage.objects.filter(pk="dup").count()), 10) == 1


async def test_a_connection_an_error_left_unusable_is_closed_before_the_next_call(closes, monkeypatch):
    db = DatabaseThread(idle=60)
    thread = await asyncio.wait_for(db.run(lambda: (_row("a"), threading.get_ident())[1]), 10)

    def fail_midway() -> None:
        connection.errors_occurred = True  # what Django sets when a query raised a DatabaseError

    await asyncio.wait_for(db.run(fail_midway), 10)
    assert thread not in closes
    monkeypatch.setattr(type(connections["default"]), "is_usable", lambda self: False)  # the server went away
    await asyncio.wait_for(db.run(lambda: _row("b")), 10)
    assert closes.count(thread) == 1
    assert await asyncio.wait_for(db.run(lambda: AckedMessage.objects.count()), 10) == 2


async def test_a_connection_left_outside_autocommit_is_closed_before_the_next_call(closes):
    db = DatabaseThread(idle=60)
    thread = await asyncio.wait_for(db.run(lambda: (_row("a"), threading.get_ident())[1]), 10)
    await asyncio.wait_for(db.run(lambda: connection.set_autocommit(False)), 10)
    await asyncio.wait_for(db.run(lambda: None), 10)
    assert closes.count(thread) == 1
    # (SQLite in memory ignores the close; give the connection back as it was.)
    await asyncio.wait_for(db.run(lambda: connection.set_autocommit(True)), 10)


@pytest.fixture
def writers():
    """The name of the thread that saved each ``AckedMessage``."""
    names: list[str] = []

    def note(**_: object) -> None:
        names.append(threading.current_thread().name)

    pre_save.connect(note, sender=AckedMessage, weak=False)
    yield names
    pre_save.disconnect(note, sender=AckedMessage)


def test_a_sync_send_writes_its_row_on_the_callers_connection(writers):
    # In the caller's thread, so inside its transaction if it has one (docs/delivery.md).
    tasks = get_hub_context("conduit_rt.demo.hubs.TaskHub")
    message_id = tasks.clients.group("g").send("TaskCompleted", {"taskId": "t1"}, ack=True)
    assert writers == [threading.current_thread().name]
    assert AckedMessage.objects.filter(pk=message_id).exists()


async def test_an_async_send_writes_its_row_in_the_delivery_thread(writers):
    tasks = get_hub_context("conduit_rt.demo.hubs.TaskHub")
    message_id = await asyncio.wait_for(
        tasks.clients.group("g").asend("TaskCompleted", {"taskId": "t1"}, ack=True), 10
    )
    assert writers == ["conduit-db"]
    assert await asyncio.wait_for(DatabaseThread().run(AckedMessage.objects.filter(pk=message_id).exists), 10)
