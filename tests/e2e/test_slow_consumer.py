"""A slow consumer: a client that stops reading its socket while its task group receives a burst
of large messages (300 of 200 kB). On daphne and on uvicorn: another member of the group, on the
same server process, gets all of them at once; the stalled one is closed as a slow consumer
(``conduit_slow_consumers_total``) and its connection ends: with the Close (``allowReconnect``)
when it reads again within ``SLOW_CONSUMER_GRACE``, else dropped then; the server's peak memory
stays far below the unread 60 MB.
"""

from __future__ import annotations

import json
import time

import pytest

from .harness import CLIENTS, PYTHON, ClientProcess, scrape
from .test_load import ProcessSampler

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

EVENTS, SIZE = 300, 200_000
BURST = (
    "from hubs.send import get_hub_context\n"
    "group = get_hub_context('conduit_rt.demo.hubs.TaskHub').clients.group('task-{task}')\n"
    "for n in range({events}):\n"
    "    group.send('Blob', {{'n': n, 'data': 'x' * {size}}})\n"
)


def reader(url: str, token: str, task_id: str, mode: str) -> ClientProcess:
    config = {"url": url, "token": token, "taskId": task_id, "mode": mode, "target": "Blob"}
    return ClientProcess([PYTHON, str(CLIENTS / "raw_reader.py"), json.dumps(config)], f"reader-{mode}")


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
def test_a_client_that_stops_reading_is_closed_and_delays_nobody(make_site, clients, kind):
    site = make_site()
    server = site.server(kind=kind)
    token = site.token("alice")
    task_id = server.create_task(token)
    url = f"{server.url}/hubs/tasks"
    stalled, fast = reader(url, token, task_id, "stall"), reader(url, token, task_id, "read")
    clients.extend([stalled, fast])
    stalled.expect("subscribed", timeout=20)
    fast.expect("subscribed", timeout=20)

    assert server.process is not None
    with ProcessSampler(server.process.pid) as sampler:
        site.shell(BURST.format(task=task_id, events=EVENTS, size=SIZE), timeout=120)
        fast.expect("count", timeout=60, n=EVENTS)  # all of them, while the other reads nothing
        metrics = scrape(server, timeout=10)
        peak_kib = sampler.memory()["VmHWM"]
    assert metrics.get('conduit_slow_consumers_total{hub="tasks"}') == 1.0, metrics
    print(f"\n{kind}: peak RSS {peak_kib / 1024:.0f} MiB for a {EVENTS * SIZE / 1e6:.0f} MB burst")
    assert peak_kib < 400 * 1024  # the unread 60 MB were never all held

    stalled.process.stdin.write(json.dumps({"cmd": "read"}) + "\n")  # type: ignore[union-attr]
    stalled.process.stdin.flush()  # type: ignore[union-attr]
    # The burst took longer than the grace: the server dropped the connection (its Close, queued
    # behind 64 kB or more of unread frames, could not go out), and tore it down: only the fast
    # reader is left in the monitor.
    deadline = time.monotonic() + 30
    while scrape(server, timeout=10).get('conduit_active_connections{hub="tasks"}') != 1.0:
        assert time.monotonic() < deadline, "the slow consumer was not torn down"
        time.sleep(0.2)  # polling another process: nothing to wait on instead
    # Its client sees the end, on both servers (the abort resets the connection: its FIN would
    # otherwise wait in the kernel behind the megabytes the client never read).
    while not (stalled.has("closed") or stalled.has("ended")):
        assert time.monotonic() < deadline, f"the client did not see its end: {stalled.stderr[-5:]}"
        time.sleep(0.1)
    for closed in stalled.take_events("closed"):
        assert closed["allowReconnect"] is True
        assert "did not read its messages fast enough" in closed["error"]
