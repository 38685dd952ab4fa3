"""What the hand-written SignalR JSON clients of the e2e tests share (``raw_reader.py``,
``resuming_reader.py``): the record separator, their stdout event lines, and negotiate."""

from __future__ import annotations

import json
import urllib.request

SEP = "\x1e"


def emit(**event: object) -> None:
    """One event line on stdout, for the test driving the client."""
    print(json.dumps(event), flush=True)


def negotiate(url: str, token: str) -> str:
    """Negotiate version 1 with a bearer token; the connection token."""
    request = urllib.request.Request(
        f"{url}/negotiate?negotiateVersion=1",
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["connectionToken"])
