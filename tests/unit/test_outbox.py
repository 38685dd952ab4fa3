"""``Outbox``: writes the server takes at once cost no task; the first one it makes wait is
finished by a writer task with those behind it queued in order; past the limit ``on_full`` runs
once; a slow consumer's close goes out behind what the server holds, or the connection is dropped."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from hubs.outbox import Outbox
from hubs.protocol import CloseMessage, get_protocol
from hubs.session import SLOW_CONSUMER_ERROR, ProtocolSession


class Server:
    """An ASGI send that waits while ``paused`` is set (uvicorn's, with a full socket buffer)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.writable = asyncio.Event()
        self.writable.set()

    async def send(self, message: dict) -> None:
        await self.writable.wait()
        self.sent.append(message)


def frame(n: int) -> dict:
    return {"type": "websocket.send", "text": f"m{n}"}


async def test_writes_the_server_takes_at_once_run_no_task_and_keep_their_order():
    server, full = Server(), []
    outbox = Outbox(server.send, limit=100, transport=None, on_full=lambda: full.append(1), on_error=print)
    tasks = len(asyncio.all_tasks())
    for n in range(5):
        outbox.push(frame(n), 2)
    assert server.sent == [frame(n) for n in range(5)]  # sent before push returned
    assert len(asyncio.all_tasks()) == tasks and full == []


async def test_a_write_that_waits_is_finished_by_a_writer_and_the_rest_queue_behind_it():
    server, full = Server(), []
    outbox = Outbox(server.send, limit=10, transport=None, on_full=lambda: full.append(1), on_error=print)
    outbox.push(frame(0), 2)
    server.writable.clear()  # the client stopped reading
    for n in range(1, 5):
        outbox.push(frame(n), 2)  # never waits
    # frame 1 waits in the writer; 2, 3 and 4 are queued behind it
    assert server.sent == [frame(0)] and outbox.queued == 6
    outbox.push(frame(5), 2)
    outbox.push(frame(6), 2)  # 10 bytes queued: at the limit
    assert full == []
    outbox.push(frame(7), 2)  # past it
    assert full == [1] and outbox.full
    outbox.push(frame(8), 2)  # taken no more
    server.writable.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert server.sent == [frame(n) for n in range(7)] and outbox.queued == 0
    assert full == [1]


async def test_abort_cancels_the_waiting_write_and_drops_the_queue():
    server = Server()
    outbox = Outbox(server.send, limit=0, transport=None, on_full=lambda: None, on_error=print)
    server.writable.clear()
    outbox.push(frame(0), 2)
    outbox.push(frame(1), 2)
    outbox.abort()
    await asyncio.sleep(0)
    server.writable.set()
    await asyncio.sleep(0)
    assert server.sent == [] and outbox.queued == 0


async def test_a_failing_write_behind_a_wait_reaches_on_error():
    errors: list[Exception] = []

    class Gone(Exception):
        pass

    gate = asyncio.Event()

    async def send(message):
        await gate.wait()
        raise Gone("closed")

    outbox = Outbox(send, limit=0, transport=None, on_full=lambda: None, on_error=errors.append)
    outbox.push(frame(0), 2)
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert [type(e) for e in errors] == [Gone]


class Transport:
    """A server transport holding ``held`` bytes the client has not read."""

    def __init__(self) -> None:
        self.held = 0
        self.aborted = False

    def backlog(self) -> int:
        return self.held

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture
def slow_session(monkeypatch):
    server, transport = Server(), Transport()
    monkeypatch.setattr("hubs.session.transport_of", lambda send: transport)
    monkeypatch.setattr("hubs.session.SLOW_CONSUMER_GRACE", 0.05)
    session = ProtocolSession(server.send, hub_name="tasks", clock=lambda: 1.0, count_out=lambda n: None)
    session.protocol = get_protocol("json")
    return session, server, transport


def slow_consumers() -> float:
    return REGISTRY.get_sample_value("conduit_slow_consumers_total", {"hub": "tasks"}) or 0.0


async def test_a_slow_consumer_is_told_to_reconnect_and_dropped_if_that_does_not_go_out(slow_session):
    session, server, transport = slow_session
    before = slow_consumers()
    await session.write_record({"json": "a\x1e"})
    transport.held = 1024 * 1024 + 1  # daphne's buffer: the client stopped reading
    await session.write_record({"json": "b\x1e"})
    assert session.closed and session.close_error == SLOW_CONSUMER_ERROR
    assert slow_consumers() == before + 1
    close = get_protocol("json").decoder(10**6).feed(server.sent[-2]["text"])[0]
    assert close == CloseMessage(error=SLOW_CONSUMER_ERROR, allow_reconnect=True)
    assert server.sent[-1] == {"type": "websocket.close", "code": 1000}
    await session.write_record({"json": "c\x1e"})  # nothing more
    assert len(server.sent) == 4
    await asyncio.sleep(0.1)  # the grace: the client read nothing of it
    assert transport.aborted


async def test_a_slow_consumer_that_reads_its_close_in_time_is_not_dropped(slow_session):
    session, _, transport = slow_session
    transport.held = 2 * 1024 * 1024
    await session.write_record({"json": "a\x1e"})
    assert session.closed
    transport.held = 0  # it read what was there, the Close included
    await asyncio.sleep(0.1)
    assert not transport.aborted


async def test_a_send_that_returns_another_kind_of_awaitable_is_awaited_in_order():
    sent: list[dict] = []
    loop = asyncio.get_running_loop()

    def send(message):  # a middleware's send that answers a future, not a coroutine
        future = loop.create_future()
        loop.call_later(0.01, lambda: (sent.append(message), future.set_result(None)))
        return future

    outbox = Outbox(send, limit=0, transport=None, on_full=lambda: None, on_error=print)
    outbox.push(frame(0), 2)
    outbox.push(frame(1), 2)  # behind the first
    await asyncio.sleep(0.1)
    assert sent == [frame(0), frame(1)]


async def test_drain_waits_until_the_client_read_enough_or_the_outbox_is_full(slow_session):
    session, _, transport = slow_session
    transport.held = 900_000
    asyncio.get_running_loop().call_later(0.02, lambda: setattr(transport, "held", 100_000))
    assert await asyncio.wait_for(session.outbox.drain(512 * 1024), timeout=5) is True
    transport.held = 900_000
    asyncio.get_running_loop().call_later(0.02, lambda: setattr(session.outbox, "full", True))
    assert await asyncio.wait_for(session.outbox.drain(512 * 1024), timeout=5) is False


async def test_a_replay_is_paced_to_what_the_client_reads_and_never_trips_the_bound(slow_session):
    session, server, transport = slow_session
    before = slow_consumers()
    loop = asyncio.get_running_loop()
    for _ in range(40):  # 40 records of 100 kB: 4 MB, four times the bound
        await asyncio.wait_for(session.pace(), timeout=5)
        await session.write_record({"json": "x" * 100_000 + "\x1e"})
        transport.held += 100_000  # daphne keeps it until the client reads
        loop.call_later(0.001, lambda: setattr(transport, "held", max(0, transport.held - 100_000)))
    assert not session.closed and slow_consumers() == before
    assert len(server.sent) == 40


async def test_pace_gives_up_after_the_grace_for_a_client_that_does_not_read(slow_session):
    session, _, transport = slow_session
    transport.held = 900_000  # over half the bound, and never read
    await asyncio.wait_for(session.pace(), timeout=5)  # back after SLOW_CONSUMER_GRACE (0.05 s here)
    assert not session.closed  # the next write decides, as any write does
