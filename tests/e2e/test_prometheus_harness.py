"""The Prometheus harness itself: a real Prometheus scrapes a static exposition served from a
thread, and a query returns its value; an unreachable target is reported down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.prometheus import PrometheusError, PrometheusServer, free_port, sample_value

pytestmark = pytest.mark.e2e

EXPOSITION = b"""# HELP conduit_test_gauge A gauge the harness test serves.
# TYPE conduit_test_gauge gauge
conduit_test_gauge{hub="x"} 3
"""


class Exposition:
    """A static ``/metrics`` on a loopback port, counting the scrapes it answers."""

    def __init__(self) -> None:
        self.scrapes = 0
        exposition = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                exposition.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(EXPOSITION)))
                self.end_headers()
                self.wfile.write(EXPOSITION)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Exposition:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def exposition() -> Iterator[Exposition]:
    with Exposition() as served:
        yield served


@pytest.fixture(scope="module")
def dead_target() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture(scope="module")
def prometheus(exposition, dead_target, tmp_path_factory) -> Iterator[PrometheusServer]:
    """One server for the module: each start costs ~5 s (Prometheus hands discovered targets
    to the scrapers on a fixed 5 s tick)."""
    workdir = tmp_path_factory.mktemp("prometheus")
    with PrometheusServer([exposition.target, dead_target], workdir=workdir) as server:
        yield server


def test_prometheus_scrapes_the_exposition_and_answers_a_query(prometheus, exposition, dead_target):
    result = prometheus.wait_for("conduit_test_gauge", bool, timeout=15)
    assert [s["metric"] for s in result] == [
        {"__name__": "conduit_test_gauge", "hub": "x", "instance": exposition.target, "job": "conduit"}
    ], prometheus.log_tail()
    assert sample_value(result[0]) == 3
    assert exposition.scrapes >= 1

    targets = prometheus.wait_for_targets(
        lambda ts: len(ts) == 2 and all(t["health"] != "unknown" for t in ts), timeout=5
    )
    health = {t["labels"]["instance"]: (t["scrapeUrl"], t["health"], t["lastError"]) for t in targets}
    assert health[exposition.target] == (f"http://{exposition.target}/metrics", "up", ""), health


def test_an_unreachable_target_is_down_and_its_series_never_appear(prometheus, dead_target):
    prometheus.wait_for_targets(
        lambda ts: any(t["labels"]["instance"] == dead_target and t["health"] == "down" for t in ts),
        timeout=15,
    )
    (dead,) = [t for t in prometheus.targets() if t["labels"]["instance"] == dead_target]
    assert "connection refused" in dead["lastError"], dead
    assert sample_value(prometheus.query(f'up{{instance="{dead_target}"}}')[0]) == 0
    with pytest.raises(TimeoutError, match="conduit_test_gauge"):
        prometheus.wait_for(f'conduit_test_gauge{{instance="{dead_target}"}}', bool, timeout=1.5)


def test_a_bad_expression_raises(prometheus):
    with pytest.raises(PrometheusError, match="bad_data"):
        prometheus.query("conduit_test_gauge{")
