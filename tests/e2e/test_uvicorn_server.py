"""``manage.py serve --server uvicorn`` for real: its logs keep tokens out, SIGTERM closes the hubs.

One uvicorn process with its access log on: a negotiate and two WebSockets (one refused) carry
``access_token`` in their query strings, as browsers send it. uvicorn writes HTTP requests to its
access logger and WebSocket outcomes (with the query string) to ``uvicorn.error``: every line
must show ``access_token=***`` and never the token. Then SIGTERM: uvicorn closes the open
WebSocket with 1012 (service restart), the hub's teardown runs (its connection leaves the
monitor at once, not when its presence lease runs out) and the process ends by the signal it got,
not by the harness's SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request

import pytest
import websockets

from .harness import PYTHON, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.e2e

TIMEOUT = 10


def monitored(site, connection_id: str) -> bool:
    """Whether the site's connection monitor holds ``connection_id`` (asked from another process)."""
    code = (
        "import asyncio; from monitoring.monitor import get_monitor; "
        f"print(asyncio.run(get_monitor().get({connection_id!r})) is not None)"
    )
    return site.shell(code) == "True"


def test_uvicorn_logs_no_token_and_sigterm_closes_websockets_through_the_hub(site, tokens):
    port = free_port()
    log_name = f"uvicorn-access-{port}.log"
    process = site.spawn([PYTHON, "manage.py", "serve", "--server", "uvicorn", "--port", str(port)], log_name)
    wait_for_port(port, 30, process)
    token = tokens["alice"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hubs/tasks/negotiate?negotiateVersion=1&access_token={token}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        assert response.status == 200  # the query-string token authenticated the request
        negotiated = json.loads(response.read())
    hub_url = f"ws://127.0.0.1:{port}/hubs/tasks"

    async def run() -> int | None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"{hub_url}?id=nope&access_token={token}", open_timeout=TIMEOUT):
                pass
        assert refused.value.response.status_code == 403
        query = f"?id={negotiated['connectionToken']}&access_token={token}"
        async with websockets.connect(hub_url + query, open_timeout=TIMEOUT) as ws:
            await ws.send(json.dumps({"protocol": "json", "version": 1}) + "\x1e")
            assert await asyncio.wait_for(ws.recv(), timeout=TIMEOUT) == "{}\x1e"
            deadline = time.monotonic() + TIMEOUT
            while not await asyncio.to_thread(monitored, site, negotiated["connectionId"]):
                assert time.monotonic() < deadline, "the connection never reached the monitor"
            stopping = asyncio.ensure_future(asyncio.to_thread(stop_process, process))
            await asyncio.wait_for(ws.wait_closed(), timeout=15)
            await stopping
            return ws.close_code

    assert asyncio.run(run()) == 1012  # uvicorn's shutdown close: clients reconnect elsewhere
    assert process.returncode == -signal.SIGTERM  # uvicorn re-raises SIGTERM once shut down
    assert not monitored(site, negotiated["connectionId"])  # the hub's teardown removed it

    log = (site.workdir / log_name).read_text()
    assert token not in log
    assert '"POST /hubs/tasks/negotiate?negotiateVersion=1&access_token=*** HTTP/1.1" 200' in log
    assert f'"WebSocket /hubs/tasks?id={negotiated["connectionToken"]}&access_token=***" [accepted]' in log
    assert '"WebSocket /hubs/tasks?id=nope&access_token=***" 403' in log
    assert "timeout graceful shutdown exceeded" not in log
