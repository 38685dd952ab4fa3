"""The demo page in headless Chromium on the embedded defaults: SQLite, in-memory layer, eager Celery."""

from __future__ import annotations

import json
import subprocess

import pytest

from .harness import CLIENTS, ROOT

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "artifacts"


def test_demo_page_shows_a_task_running_to_completion(make_site):
    site = make_site(
        redis=False,
        CONDUIT_RT_DEMO_TASK_START_DELAY="0.5",
        CONDUIT_RT_DEMO_TASK_STEPS="5",
        CONDUIT_RT_DEMO_TASK_STEP_INTERVAL="0.3",
    )
    site.manage("ensure_demo_user")
    server = site.server()
    ARTIFACTS.mkdir(exist_ok=True)
    config = {
        "url": server.url,
        "username": "demo",
        "password": "demo",
        "screenshot": str(ARTIFACTS / "demo-page.png"),
        "timeoutMs": 30000,
    }
    run = subprocess.run(
        ["node", str(CLIENTS / "demo_page.mjs"), json.dumps(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1]) if run.stdout.strip() else {"stderr": run.stderr}
    assert result.get("ok"), result
    assert result["progress"] == 100
    assert result["status"] == "completed: Done"
    # Newest first on the page.
    assert result["events"][0] == "TaskCompleted" and result["events"][-1] == "TaskStarted"
    assert result["events"].count("TaskProgress") == 5
    assert result["consoleErrors"] == []
