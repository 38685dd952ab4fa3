"""The demo page in headless Chromium on the embedded defaults: SQLite, in-memory layer, eager Celery.
The page runs on the JS helper (``hubs/static/conduit/conduit.mjs``) over the official browser client."""

from __future__ import annotations

import pytest

from .harness import ROOT, run_node_script

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "artifacts"


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
def test_demo_page_shows_a_task_running_to_completion(make_site, protocol):
    site = make_site(
        redis=False,
        CONDUIT_DEMO_TASK_START_DELAY="0.5",
        CONDUIT_DEMO_TASK_STEPS="5",
        CONDUIT_DEMO_TASK_STEP_INTERVAL="0.3",
        CONDUIT_DEMO_PING_INTERVAL_MS="500",
    )
    site.manage("ensure_demo_user")
    server = site.server()
    ARTIFACTS.mkdir(exist_ok=True)
    config = {
        "url": server.url,
        "username": "demo",
        "password": "demo",
        "screenshot": str(ARTIFACTS / f"demo-page-{protocol}.png"),
        "protocol": protocol,
        "timeoutMs": 30000,
    }
    result = run_node_script("demo_page.mjs", config)
    assert result.get("ok"), result
    assert result["progress"] == 100
    assert result["status"] == "completed: Done"
    # Newest first on the page.
    assert result["events"][0] == "TaskCompleted" and result["events"][-1] == "TaskStarted"
    assert result["events"].count("TaskProgress") == 5
    assert result["consoleErrors"] == []
    # The page runs on the JS helper: its pings measured the connection's round trip.
    assert result["quality"] in {"good", "fair", "poor"}
    assert result["qualityText"].endswith(" ms)"), result["qualityText"]
    # The protocol the page asked for is the one on the wire (after the JSON handshake).
    assert result["protocol"] == protocol
    frames = result["frames"]
    assert result["sockets"] == 1, (result["sockets"], result["frames"])  # one hub connection on the page
    if protocol == "messagepack":
        assert frames["binary"] > 5 and frames["text"] <= 1, frames
    else:
        assert frames["text"] > 5 and frames["binary"] == 0, frames
