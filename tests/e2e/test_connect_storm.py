"""A connect storm, then a disconnect storm.

2,000 clients on the JS helper over the official client start at the same moment against one
daphne whose admission limits are set low (100 attempts a second, a burst of 50). Every one of
them ends connected; those turned away (negotiate's 503, or a Close after the handshake) tried
again only after the wait the server asked for; none failed for another reason; the server
counted each refusal (``conduit_admission_refused_total``).

Then all 2,000 leave at once: within a bounded wait the monitor's gauges read 0 and Redis holds
nothing of them (memberships, leases, user keys, monitor records, layer groups, negotiated
tokens: ``test_load.leftovers``), and the server logged no error or warning through both storms.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from .harness import CLIENTS, ClientProcess, Site, scrape
from .test_load import enough_file_descriptors, hub_gauges, is_clean, leftovers, log_problems  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CONNECTIONS = 2000
USERS = 40  # 50 connections each: below MAX_CONNECTIONS_PER_USER (100)
RATE, BURST = 100, 50
DEADLINE = 150  # s for all of them to be connected
SETTLE_TIMEOUT = 30  # s for the gauges and Redis to read empty after they all left


def tokens(site: Site) -> list[str]:
    code = (
        "import json; from django.contrib.auth import get_user_model; "
        "from hubs.auth.tokens import issue_token; "
        f"print(json.dumps([issue_token(get_user_model().objects.get_or_create(username=f'storm{{i}}')[0]) "
        f"for i in range({USERS})]))"
    )
    return json.loads(site.shell(code).splitlines()[-1])


def refusals(metrics: dict[str, float]) -> dict[str, float]:
    return {
        name: value for name, value in metrics.items() if name.startswith("conduit_admission_refused_total{")
    }


def test_two_thousand_clients_at_once_all_connect_after_honouring_retry_after_and_leave_nothing(
    make_site,
    redis_url,
    clients,
    enough_file_descriptors,  # noqa: F811
):
    site = make_site(
        CONDUIT_RT_CONNECT_RATE=str(RATE),
        CONDUIT_RT_CONNECT_BURST=str(BURST),
        CONDUIT_RT_KEEP_ALIVE_INTERVAL="15",
    )
    server = site.server()
    config: dict[str, Any] = {
        "url": f"{server.url}/hubs/tasks",
        "tokens": tokens(site),
        "connections": CONNECTIONS,
        "deadlineMs": DEADLINE * 1000,
    }
    storm = ClientProcess(["node", str(CLIENTS / "storm_clients.mjs"), json.dumps(config)], "storm")
    clients.append(storm)
    report = storm.expect("storm", timeout=DEADLINE + 30)
    print(f"\nconnect storm: {report}")

    assert report["connected"] == CONNECTIONS, report
    assert report["otherErrors"] == 0, report["firstOtherErrors"]
    assert report["refusedClients"] > CONNECTIONS / 2, report  # the limits did bite
    assert report["early"] == 0, report  # nobody came back before the wait it was asked for
    counted = refusals(scrape(server, timeout=10))
    assert sum(counted.values()) == report["refusals"], counted
    assert counted.get('conduit_admission_refused_total{door="negotiate",hub="tasks",reason="rate"}'), counted

    metrics = scrape(server, timeout=10)
    assert metrics.get('conduit_active_connections{hub="tasks"}') == CONNECTIONS
    # All of them leave at once.
    storm.command(cmd="stop")
    storm.expect("stopped", timeout=60)
    store, prefix = redis.Redis.from_url(redis_url), site.env["CONDUIT_RT_KEY_PREFIX"]
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        gauges, found = hub_gauges(server), leftovers(store, prefix)
        if (not any(gauges.values()) and is_clean(found)) or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling another process's state: nothing to wait on instead
    assert gauges == {"active_connections": 0, "groups": 0, "stale_connections": 0}, gauges
    assert is_clean(found), {k: v if isinstance(v, int) else v[:10] for k, v in found.items()}
    assert log_problems(site, server) == []
