"""The benchmarks still run against the library as it is: a smoke run of each (``--quick``) must
finish with every side delivering everything. No figure is judged here: performance is measured
in ``bench/``, not in tests; this only keeps the benchmarks from rotting (a bench hub calling a
hub internal that a refactoring removed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .harness import ROOT

pytestmark = [pytest.mark.e2e]


@pytest.mark.parametrize("script", ["fanout.py", "acked.py"])
def test_a_quick_run_of_the_benchmark_delivers_everything(script, tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    sides = {run.get("impl") or run.get("side") for run in runs}
    assert "hub" in sides and len(sides) >= 2, sides
    assert [
        (r.get("impl") or r.get("side"), r["status"], r["lost"])
        for r in runs
        if r["status"] != "ok" or r["lost"]
    ] == []


def test_a_quick_run_of_the_connection_benchmark_connects_every_side(tmp_path):
    """``bench/connect.py --quick`` (about 25 s): each side's storm, idle and leave phases ran and
    connected something. Failures, refusals, leftovers and every figure are the bench's to report."""
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "connect.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert sorted(r["side"] for r in runs) == ["conduit", "plain", "socketio"]
    for run in runs:
        assert run["status"] == "ok", (run["side"], run.get("error"))
        assert run["storm"]["established"] > 0, (run["side"], run["storm"])
        assert run["idle"] and all(idle["held"] > 0 for idle in run["idle"]), (run["side"], run["idle"])
        assert run["leave"]["closing"] > 0, (run["side"], run["leave"])
