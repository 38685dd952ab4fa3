"""The protocol package is pure Python: importing it loads no Django."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.harness import ROOT


def test_protocol_imports_without_django():
    code = (
        "import sys; import hubs.protocol as p; "
        "p.get_protocol('json'); p.get_protocol('messagepack'); "
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))"
    )
    # hubs/__init__.py is import-light, so this measures the protocol package alone.
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]"
