"""A write that finds the socket closed by the peer (the disconnect event not handled yet) closes
the session quietly: logged, counted, never raised into the keep-alive or the router."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from hubs.outbound import encode_outbound
from hubs.protocol import PingMessage, get_protocol
from hubs.session import ProtocolSession


class Disconnected(Exception):
    """What autobahn raises for a send on a closed protocol."""


def counted() -> float:
    return REGISTRY.get_sample_value("conduit_errors_total", {"where": "send_after_close"}) or 0.0


class RecordingSession(ProtocolSession):
    """A session that keeps what reached the server (``sent``)."""

    sent: list[dict]


@pytest.fixture
def session():
    sent: list[dict] = []

    async def send(message):
        if sent and sent[-1].get("fail"):
            raise Disconnected("Attempt to send on a closed protocol")
        sent.append(message)

    found = RecordingSession(send, hub_name="tasks", clock=lambda: 5.0, count_out=lambda n: None)
    found.protocol = get_protocol("json")
    found.sent = sent
    return found


@pytest.mark.parametrize("write", ["ping", "record", "close"])
async def test_a_write_to_a_closed_socket_closes_the_session_and_is_counted(session, write, caplog):
    await session.write(PingMessage())
    session.sent[-1]["fail"] = True  # the peer is gone from now on
    before = counted()
    if write == "ping":
        await session.write(PingMessage())
    elif write == "record":
        await session.write_outbound(encode_outbound("Tick", {"messageId": "m1", "n": 1}))
    else:
        await session.close_socket()
    assert session.closed
    assert counted() == before + 1
    assert "a write found the socket closed (Disconnected)" in caplog.text
    await session.write(PingMessage())  # nothing more is tried
    assert counted() == before + 1


async def test_a_keep_alive_ping_is_the_protocols_ping_record_in_both_protocols():
    from hubs.protocol import PingMessage, get_protocol
    from hubs.session import ProtocolSession

    for name in ("json", "messagepack"):
        sent: list[dict] = []

        async def send(message: dict, sent: list[dict] = sent) -> None:
            sent.append(message)

        session = ProtocolSession(send, hub_name="tasks", clock=lambda: 5.0, count_out=lambda n: None)
        session.protocol = get_protocol(name)
        await session.ping()
        await session.ping()
        data = [m.get("text") or m.get("bytes") for m in sent]
        assert data[0] == data[1]
        decoded = (
            get_protocol(name).decoder(10**6).feed(data[0].encode() if isinstance(data[0], str) else data[0])
        )
        assert decoded == [PingMessage()]
        assert session.last_sent == 5.0
