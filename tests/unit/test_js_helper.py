"""The JS helper's unit tests (``tests/js``, ``node --test``), run as part of the suite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_js_helper_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: scripts/setup installs what the suite needs")
    done = subprocess.run(
        [node, "--test", str(ROOT / "tests" / "js")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = [line for line in done.stdout.splitlines() if line.startswith(("# pass", "# fail", "not ok"))]
    print("\n".join(summary))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout
