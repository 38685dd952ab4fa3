"""``manage.py serve``: the arguments each server gets, and uvicorn's log lines with tokens redacted.

The servers themselves are not started here (their ``run`` is replaced); ``tests/e2e`` runs both
for real (``test_uvicorn_server.py``, the official clients, the fault matrix).
"""

from __future__ import annotations

import io
import logging
import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from hubs.logging import RedactTokensFilter
from hubs.management.commands import serve as serve_command_module
from hubs.servers import GC_THRESHOLDS, prepare_gc
from hubs.servers import uvicorn as serve_uvicorn

TOKEN = "eyJ1Ijo:sig:xyz"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error")


@pytest.fixture
def uvicorn_loggers() -> Iterator[None]:
    """The command sets uvicorn's loggers up: put them back as they were afterwards."""
    saved = {
        name: (lg.handlers[:], lg.level, lg.propagate)
        for name in UVICORN_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers, lg.level, lg.propagate = handlers, level, propagate


@pytest.fixture
def started(monkeypatch, uvicorn_loggers) -> dict[str, Any]:
    """What ``serve`` would have run: ``{"uvicorn": Config}`` or ``{"daphne": kwargs}``."""
    import uvicorn

    import hubs.servers.daphne

    seen: dict[str, Any] = {}

    def uvicorn_run(self: Any, sockets: Any = None) -> None:
        seen["uvicorn"] = self.config

    class FakeDaphne:
        def __init__(self, **kwargs: Any) -> None:
            seen["daphne"] = kwargs

        def run(self) -> None:
            pass

    def prepare_gc(thresholds: Any) -> None:  # not in the test process: it would freeze it
        seen["gc"] = thresholds

    monkeypatch.setattr(serve_command_module, "prepare_gc", prepare_gc)
    monkeypatch.setattr(uvicorn.Server, "run", uvicorn_run)
    monkeypatch.setattr(hubs.servers.daphne, "ReapingServer", FakeDaphne)
    return seen


def serve_command(*args: str) -> str:
    out = io.StringIO()
    call_command("serve", *args, stdout=out)
    return out.getvalue()


def test_daphne_is_the_default_with_its_limits(started):
    printed = serve_command("--host", "0.0.0.0", "--port", "8123")
    assert printed == "Serving on http://0.0.0.0:8123/\n"
    assert set(started) == {"daphne", "gc"}
    kwargs = started["daphne"]
    assert kwargs["endpoints"] == ["tcp:port=8123:interface=0.0.0.0"]
    assert kwargs["websocket_max_message_size"] == 1024 * 1024
    assert kwargs["ping_interval"] == math.inf
    assert kwargs["websocket_timeout"] == -1
    assert kwargs["action_logger"] is not None


def test_uvicorn_gets_uvloop_httptools_and_daphnes_limits(started):
    printed = serve_command("--server", "uvicorn", "--host", "0.0.0.0", "--port", "8124")
    assert printed == "Serving on http://0.0.0.0:8124/\n"
    assert set(started) == {"uvicorn", "gc"}
    config = started["uvicorn"]
    assert (config.host, config.port) == ("0.0.0.0", 8124)
    assert (config.loop, config.http, config.ws, config.lifespan) == (
        "uvloop",
        "httptools",
        "websockets-sansio",
        "off",
    )
    assert config.ws_max_size == 1024 * 1024
    assert config.ws_ping_interval is None  # no protocol pings: SignalR keeps the connection alive
    assert config.ws_per_message_deflate is False
    assert config.proxy_headers is False
    assert config.timeout_graceful_shutdown == 10
    assert config.access_log is True
    # The names resolve to uvicorn's classes, with uvloop and httptools installed.
    config.load()
    assert config.ws_protocol_class.__name__ == "WebSocketsSansIOProtocol"
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    import uvloop

    assert config.get_loop_factory() is uvloop.new_event_loop


def test_uvicorn_message_size_follows_max_message_size(started):
    with override_settings(CONDUIT_RT={"MAX_MESSAGE_SIZE": 4 * 1024 * 1024}):
        serve_command("--server", "uvicorn")
    assert started["uvicorn"].ws_max_size == 8 * 1024 * 1024


def test_uvicorn_protocol_pings_only_when_asked_for(started):
    serve_command("--server", "uvicorn", "--ws-ping-interval", "5")
    assert started["uvicorn"].ws_ping_interval == 5.0
    assert started["uvicorn"].ws_ping_timeout == 30


def test_uvicorn_without_access_log(started):
    serve_command("--server", "uvicorn", "--no-access-log")
    assert started["uvicorn"].access_log is False
    assert logging.getLogger("uvicorn.access").handlers == []
    assert not logging.getLogger("uvicorn.access").hasHandlers()  # uvicorn then logs no request


def test_unknown_server_is_refused(started):
    with pytest.raises(CommandError, match="invalid choice: 'hypercorn'"):
        serve_command("--server", "hypercorn")
    assert started == {}


def test_uvicorn_missing_is_a_clear_error(started, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: importing it fails
    with pytest.raises(CommandError, match=r"pip install 'conduit-rt\[uvicorn\]'"):
        serve_command("--server", "uvicorn")
    assert started == {}


def _access_record() -> logging.LogRecord:
    # The shape of uvicorn's access records (httptools_impl): five arguments, the path with its query.
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"/hubs/tasks/negotiate?access_token={TOKEN}&x=1", "1.1", 200),
        None,
    )


def test_redaction_keeps_uvicorns_access_record_formattable():
    from uvicorn.logging import AccessFormatter

    record = _access_record()
    assert RedactTokensFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(
        record
    )
    assert line == '127.0.0.1:5000 - "POST /hubs/tasks/negotiate?access_token=***&x=1 HTTP/1.1" 200 OK'


def test_redaction_of_a_token_that_only_the_formatted_message_shows():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "url access_token=%s done", (TOKEN,), None)
    assert RedactTokensFilter().filter(record)
    assert record.getMessage() == "url access_token=*** done"


def test_uvicorn_log_lines_are_redacted_and_websocket_lines_follow_the_access_log(uvicorn_loggers):
    stdout, stderr = io.StringIO(), io.StringIO()
    for access_log in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stdout", stdout)
            patch.setattr("sys.stderr", stderr)
            serve_uvicorn.configure_uvicorn_logging(access_log=access_log)
        error = logging.getLogger("uvicorn.error")
        error.info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5001", f"/hubs/tasks?id=a&access_token={TOKEN}"
        )
        error.info("connection open")
        error.warning("something with Bearer %s", TOKEN)
        logging.getLogger("uvicorn.access").handle(_access_record())
    out, err = stdout.getvalue(), stderr.getvalue()
    assert TOKEN not in out + err
    # With the access log: each line once; without: only the warning again.
    assert out.count("/hubs/tasks/negotiate?access_token=***&x=1") == 1
    assert err.count('"WebSocket /hubs/tasks?id=a&access_token=***" [accepted]') == 1
    assert err.count("connection open") == 1
    assert err.count("something with Bearer ***") == 2


def test_the_collector_thresholds_are_set_before_serving(started):
    serve_command()
    assert started["gc"] == GC_THRESHOLDS
    serve_command("--gc-threshold", "python")
    assert started["gc"] is None
    serve_command("--gc-threshold", "50000,20,100")
    assert started["gc"] == (50000, 20, 100)
    with pytest.raises(CommandError, match="--gc-threshold: three positive integers"):
        serve_command("--gc-threshold", "10,0")


def test_prepare_gc_freezes_what_was_built_and_sets_the_thresholds():
    import gc

    before = gc.get_threshold()
    try:
        prepare_gc((12_345, 7, 9))
        assert gc.get_threshold() == (12_345, 7, 9)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
