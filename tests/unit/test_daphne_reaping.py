"""``ReapingServer``: each connection daphne tracks is reaped on its own events (its application
finishing, its client leaving), with daphne's outcomes, instead of by a walk every second.

The server is not started (its ``run`` starts the reactor); its hooks are called as daphne's
protocols call them, on this test's event loop. ``tests/e2e`` serves every hub through it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest

from hubs.servers.daphne import ReapingServer


class Protocol:
    """What the server needs of one of daphne's protocols."""

    def __init__(self) -> None:
        self.exceptions: list[BaseException] = []
        self.checks = 0

    def handle_exception(self, exception: BaseException) -> None:
        self.exceptions.append(exception)

    def check_timeouts(self) -> None:
        self.checks += 1


def server(application: Any, **options: Any) -> ReapingServer:
    options = {"ping_interval": math.inf, "websocket_timeout": -1, **options}
    return ReapingServer(application=application, endpoints=["tcp:port=0:interface=127.0.0.1"], **options)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def application_until(release: asyncio.Event, error: BaseException | None = None) -> Any:
    async def application(scope: dict, receive: Any, send: Any) -> None:
        await release.wait()
        if error is not None:
            raise error

    return application


async def test_a_connection_goes_once_its_application_finished_and_its_client_left():
    release = asyncio.Event()
    srv, protocol = server(application_until(release)), Protocol()
    srv.protocol_connected(protocol)
    srv.create_application(protocol, {"type": "websocket"})
    release.set()
    await settle()
    assert "application_instance" not in srv.connections[protocol]  # reaped, client still there
    srv.protocol_disconnected(protocol)
    assert protocol not in srv.connections
    srv.protocol_disconnected(protocol)  # daphne may say it twice
    assert protocol.exceptions == []


async def test_a_client_that_leaves_first_is_dropped_when_its_application_ends():
    release = asyncio.Event()
    srv, protocol = server(application_until(release)), Protocol()
    srv.protocol_connected(protocol)
    srv.create_application(protocol, {"type": "websocket"})
    srv.protocol_disconnected(protocol)
    assert protocol in srv.connections and "kill_timer" in srv.connections[protocol]
    release.set()
    await settle()
    assert protocol not in srv.connections


async def test_a_request_without_application_goes_when_its_client_leaves():
    srv, protocol = server(application_until(asyncio.Event())), Protocol()
    srv.protocol_connected(protocol)  # e.g. the HTTP request upgraded to a WebSocket
    srv.protocol_disconnected(protocol)
    assert srv.connections == {}


async def test_an_application_still_running_after_the_close_timeout_is_killed(caplog):
    srv, protocol = server(application_until(asyncio.Event()), application_close_timeout=0.01), Protocol()
    srv.protocol_connected(protocol)
    srv.create_application(protocol, {"type": "websocket"})
    instance = srv.connections[protocol]["application_instance"]
    srv.protocol_disconnected(protocol)
    with caplog.at_level(logging.WARNING, logger="daphne.server"):
        await asyncio.wait_for(asyncio.wait([instance]), timeout=5)
        await settle()
    assert instance.cancelled()
    assert protocol not in srv.connections
    assert "took too long to shut down and was killed" in caplog.text


async def test_an_application_error_is_logged_and_handed_to_a_connected_client(caplog):
    release, error = asyncio.Event(), RuntimeError("boom")
    srv, protocol = server(application_until(release, error)), Protocol()
    srv.protocol_connected(protocol)
    srv.create_application(protocol, {"type": "http"})
    with caplog.at_level(logging.ERROR, logger="daphne.server"):
        release.set()
        await settle()
    assert protocol.exceptions == [error]
    assert "Exception inside application: boom" in caplog.text


async def test_an_application_that_ends_before_a_late_disconnect_does_not_kill_anything():
    release = asyncio.Event()
    srv, protocol = server(application_until(release), application_close_timeout=0.01), Protocol()
    srv.protocol_connected(protocol)
    srv.create_application(protocol, {"type": "websocket"})
    srv.protocol_disconnected(protocol)
    timer = srv.connections[protocol]["kill_timer"]
    release.set()
    await settle()
    assert timer.cancelled() and protocol not in srv.connections


@pytest.mark.parametrize(
    ("options", "walks_all"),
    [
        ({}, False),
        ({"ping_interval": 20}, True),
        ({"websocket_timeout": 3600}, True),
        ({"http_timeout": 60}, True),
    ],
)
async def test_the_timeout_walk_covers_only_the_connections_that_can_time_out(
    monkeypatch, options, walks_all
):
    from twisted.internet import reactor

    monkeypatch.setattr(reactor, "callLater", lambda *args: None)
    srv = server(application_until(asyncio.Event()), websocket_connect_timeout=20, **options)
    old, young = Protocol(), Protocol()
    srv.protocol_connected(old)
    srv._young[0] = (srv._young[0][0] - 60, old)  # connected a minute ago: past its handshake
    srv.protocol_connected(young)
    srv.timeout_checker()
    assert (young.checks, old.checks) == (1, 1 if walks_all else 0)
    assert len(srv._young) == 1  # the old one is no longer remembered as young


def test_autobahns_per_connection_debug_text_is_built_only_when_logged():
    import inspect
    import re

    import autobahn.websocket.protocol as protocol

    from hubs.servers.daphne import LazyFormat, lazy_autobahn_debug_lines

    # The uses of pformat the patch is written for: two debug-line arguments and Timings.__str__.
    uses = re.findall(r"^.*pformat\(.*$", inspect.getsource(protocol), flags=re.M)
    assert [u.strip() for u in uses] == [
        "return pformat(self._timings)",
        'self.log.debug("\\n{attrs}", attrs=pformat(configAttrLog))',
        "transport_details=pformat(self._transport_details.marshal()),",
    ]
    original_pformat, original_str = protocol.pformat, protocol.Timings.__str__
    try:
        lazy_autobahn_debug_lines()
        text = protocol.pformat([("openHandshakeTimeout", 5, "WebSocketFactory")])
        assert isinstance(text, LazyFormat)
        assert f"\n{text}" == "\n[('openHandshakeTimeout', 5, 'WebSocketFactory')]"
        timings = protocol.Timings()
        timings.track("a")
        assert str(timings).startswith("{'a':")
    finally:
        protocol.pformat, protocol.Timings.__str__ = original_pformat, original_str
