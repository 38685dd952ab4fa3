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
