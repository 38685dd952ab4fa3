"""``KeepAliveSchedule``: one sweep for all of a loop's connections, on each connection's clock:
late handshakes fail, idle connections are pinged, silent clients closed."""

from __future__ import annotations

import asyncio
import json

from django.test import override_settings

from hubs.keepalive import CLIENT_TIMEOUT_ERROR, KeepAliveSchedule, sweep_interval
from hubs.protocol import CloseMessage, PingMessage, get_protocol
from hubs.session import ProtocolSession
from tests.support.clock import Clock

SETTINGS = {"KEEP_ALIVE_INTERVAL": 15.0, "CLIENT_TIMEOUT": 30.0, "HANDSHAKE_TIMEOUT": 15.0}


def connection(clock: Clock, *, handshaken: bool = True) -> tuple[ProtocolSession, list[dict]]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    session = ProtocolSession(send, hub_name="tasks", clock=clock, count_out=lambda n: None)
    session.last_sent = session.last_received = clock.now
    if handshaken:
        session.protocol = get_protocol("json")
    return session, sent


def records(sent: list[dict]) -> list[object]:
    decoder = get_protocol("json").decoder(10**6)
    return [m for s in sent if s.get("text") for m in decoder.feed(s["text"])]


@override_settings(CONDUIT_RT=SETTINGS)
async def test_an_idle_connection_is_pinged_once_nothing_was_sent_for_the_interval():
    clock, schedule = Clock(100.0), KeepAliveSchedule()
    session, sent = connection(clock)
    schedule.watch(session, clock.now, lambda: "tasks: c1")
    clock.now += 14.9
    await schedule.sweep()
    assert sent == []
    clock.now += 0.1
    await schedule.sweep()
    assert records(sent) == [PingMessage()]
    await schedule.sweep()  # the ping was a send: not again until the next interval
    assert len(sent) == 1


@override_settings(CONDUIT_RT=SETTINGS)
async def test_a_client_silent_for_the_timeout_is_closed_once_it_has_pinged():
    clock, schedule = Clock(100.0), KeepAliveSchedule()
    quiet, quiet_sent = connection(clock)  # never pinged: its silence does not count
    pinger, pinger_sent = connection(clock)
    pinger.client_pinged = True
    for session in (quiet, pinger):
        schedule.watch(session, clock.now, lambda: "tasks: c")
    clock.now += 30.0
    await schedule.sweep()
    close = records(pinger_sent)[-1]
    assert close == CloseMessage(error=CLIENT_TIMEOUT_ERROR, allow_reconnect=True)
    assert pinger.closed and not quiet.closed
    assert records(quiet_sent) == [PingMessage()]
    assert len(schedule) == 1  # the closed one is no longer watched


@override_settings(CONDUIT_RT=SETTINGS)
async def test_a_handshake_that_does_not_come_fails_after_the_timeout():
    clock, schedule = Clock(100.0), KeepAliveSchedule()
    session, sent = connection(clock, handshaken=False)
    schedule.watch(session, clock.now, lambda: "tasks: c1")
    clock.now += 14.0
    await schedule.sweep()
    assert sent == []
    clock.now += 1.0
    await schedule.sweep()
    assert json.loads(sent[0]["text"].rstrip("\x1e")) == {"error": "Handshake was canceled."}
    assert sent[-1]["type"] == "websocket.close" and session.closed
    assert len(schedule) == 0


async def test_one_task_keeps_every_connection_of_the_loop_alive():
    clock, schedule = Clock(100.0), KeepAliveSchedule()
    before = {t.get_name() for t in asyncio.all_tasks()}
    sessions = [connection(clock)[0] for _ in range(100)]
    for session in sessions:
        schedule.watch(session, clock.now, lambda: "tasks: c")
    names = [t.get_name() for t in asyncio.all_tasks() if t.get_name() not in before]
    assert names == ["conduit-keep-alive"]
    for session in sessions:
        schedule.unwatch(session)
    assert len(schedule) == 0


def test_the_sweep_is_at_most_a_second_apart_and_finer_for_short_timers():
    with override_settings(CONDUIT_RT=SETTINGS):
        assert sweep_interval() == 1.0
    with override_settings(CONDUIT_RT={"KEEP_ALIVE_INTERVAL": 0.1, "CLIENT_TIMEOUT": 60}):
        assert sweep_interval() == 0.025


@override_settings(CONDUIT_RT=SETTINGS)
async def test_an_idle_connection_is_looked_at_once_per_interval_not_every_sweep():
    clock, schedule = Clock(100.0), KeepAliveSchedule()
    looks = 0

    def counting_clock() -> float:
        nonlocal looks
        looks += 1
        return clock.now

    sessions = []
    for _ in range(100):
        session, _sent = connection(clock)
        session._clock = counting_clock
        schedule.watch(session, clock.now, lambda: "tasks: c")
        sessions.append(session)
    for _ in range(60):  # a minute of sweeps, one a second
        clock.now += 1.0
        await schedule.sweep()
    assert all(s.last_sent >= 145.0 for s in sessions)  # each pinged on time, 4 times
    # Each connection: 4 looks (every 15 s) and 4 Pings (a write reads the clock too), plus one
    # peek per sweep; a sweep over every connection would read it 100 x 60 times.
    assert looks <= 100 * (4 + 4) + 60 + 100
    assert len(schedule) == 100


@override_settings(CONDUIT_RT=SETTINGS)
async def test_the_entries_of_connections_that_closed_are_dropped_when_they_come_due():
    clock, schedule = Clock(100.0), KeepAliveSchedule()
    sessions = [connection(clock)[0] for _ in range(50)]
    for session in sessions:
        schedule.watch(session, clock.now, lambda: "tasks: c")
    for session in sessions[:25]:
        schedule.unwatch(session)
    for session in sessions[25:40]:
        session.closed = True
    clock.now += 15.0
    await schedule.sweep()
    assert len(schedule) == 10 and len(schedule._due) == 10  # the heap does not keep the dead
