"""Sending from synchronous code (``hubs.loop_thread.to_sync``): the coroutine runs on the process
loop, so its connections are kept from call to call, while the calling thread runs its database
calls, on its own connection and inside its transaction."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import transaction

from hubs.delivery.db_thread import run_in_db_thread
from hubs.loop_thread import to_sync
from hubs.models import AckedMessage
from hubs.send import get_hub_context

pytestmark = [pytest.mark.django_db(transaction=True)]


async def where_it_runs() -> tuple[int, str, str]:
    """The loop and thread the coroutine runs on, and the thread its database call ran in."""
    db_thread = await run_in_db_thread(lambda: threading.current_thread().name)
    return id(asyncio.get_running_loop()), threading.current_thread().name, db_thread


def test_sync_calls_share_one_loop_and_lend_the_callers_thread_to_the_database():
    first, second = to_sync(where_it_runs)(), to_sync(where_it_runs)()
    assert first[0] == second[0]  # one loop: its Redis and layer clients are kept
    assert first[1] == second[1] == "conduit-loop"
    assert first[2] == second[2] == threading.current_thread().name


def test_calls_from_other_threads_run_their_database_calls_in_their_own_thread():
    seen: dict[str, str] = {}

    def worker(name: str) -> None:
        seen[name] = to_sync(where_it_runs)()[2]

    threads = [threading.Thread(target=worker, args=(f"sender-{i}",), name=f"sender-{i}") for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {f"sender-{i}": f"sender-{i}" for i in range(4)}


def test_an_acknowledged_sync_send_inside_a_transaction_is_part_of_it():
    tasks = get_hub_context("conduit_rt.demo.hubs.TaskHub")
    sent: list[str] = []
    with pytest.raises(RuntimeError, match="rolled back"), transaction.atomic():
        sent.append(tasks.clients.group("g").send("TaskCompleted", {"taskId": "t1"}, ack=True))
        assert AckedMessage.objects.filter(pk=sent[0]).exists()  # visible inside it
        raise RuntimeError("rolled back")
    assert not AckedMessage.objects.filter(pk=sent[0]).exists()
    kept = tasks.clients.group("g").send("TaskCompleted", {"taskId": "t1"}, ack=True)
    assert AckedMessage.objects.filter(pk=kept).exists()


def test_a_call_that_takes_too_long_raises_and_is_cancelled():
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        to_sync(forever, timeout=0.2)()
    assert cancelled.wait(10)


def test_an_exception_reaches_the_caller():
    async def fails() -> None:
        await run_in_db_thread(lambda: AckedMessage.objects.get(pk="nope"))

    with pytest.raises(AckedMessage.DoesNotExist):
        to_sync(fails)()


async def test_a_sync_call_inside_an_event_loop_is_refused():
    with pytest.raises(RuntimeError, match="inside an event loop"):
        to_sync(where_it_runs)()
