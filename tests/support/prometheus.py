"""A real Prometheus server (Debian's ``/usr/bin/prometheus``) for tests: its own config, storage
and log in a folder, its own loopback port, scraping the given targets every second.

    with PrometheusServer(["127.0.0.1:8001"], workdir=tmp_path) as prometheus:
        result = prometheus.wait_for("sum(some_gauge)", lambda r: bool(r) and sample_value(r[0]) == 2)

A new server needs ~5 s before its first scrape (Prometheus hands discovered targets to its
scrapers on a fixed 5 s tick), so share one per module or session where a test allows.

Only the stdlib: the config is written as JSON (which is YAML), the HTTP API read with urllib.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

PROMETHEUS = Path("/usr/bin/prometheus")

Result = list[dict[str, Any]]


class PrometheusError(RuntimeError):
    """The Prometheus HTTP API answered with an error status (e.g. a bad expression)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_value(sample: dict[str, Any]) -> float:
    """The value of one instant-vector sample (``{"metric": ..., "value": [ts, "3"]}``)."""
    return float(sample["value"][1])


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


class PrometheusServer:
    """One Prometheus process: started on ``__enter__`` (ready when it returns), stopped on exit.

    ``workdir`` holds ``prometheus.yml``, ``data/`` and ``prometheus.log``; without one a temporary
    folder is made and removed on exit (pass pytest's ``tmp_path`` to keep the log of a failure).
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        metrics_path: str = "/metrics",
        job: str = "conduit",
        scrape_interval: float = 1.0,
        scrape_timeout: float | None = None,
        workdir: Path | None = None,
        port: int | None = None,
        binary: Path = PROMETHEUS,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.targets_config = list(targets)
        self.metrics_path = metrics_path
        self.job = job
        self.scrape_interval = scrape_interval
        # Under the interval (Prometheus refuses a timeout longer than the interval).
        self.scrape_timeout = scrape_timeout if scrape_timeout is not None else scrape_interval * 0.8
        if self.scrape_timeout > self.scrape_interval:
            raise ValueError("scrape_timeout must not exceed scrape_interval")
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="prometheus-")) if workdir is None else Path(workdir)
        self.port = port or free_port()
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.workdir / "prometheus.yml"
        self.data_path = self.workdir / "data"
        self.log_path = self.workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    # Lifecycle

    def config(self) -> dict[str, Any]:
        interval = _duration(self.scrape_interval)
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": _duration(self.scrape_timeout),
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets_config}],
                }
            ],
        }

    def start(self) -> None:
        if not self.binary.exists():
            raise FileNotFoundError(
                f"{self.binary} is missing: run scripts/services (installs Debian's prometheus)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        argv = [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_path}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.process.returncode} before it was ready; "
                    f"log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError) as exc:  # refused, or 503 while starting
                last_error = repr(exc)
            time.sleep(0.05)
        raise TimeoutError(
            f"prometheus not ready on {self.url} after {self.startup_timeout} s ({last_error}); "
            f"log:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; removes the folder if it made it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log (for a failing test's message)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # HTTP API

    def _get(self, path: str, params: dict[str, str] | None = None, timeout: float = 5.0) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422/503 carry the API's error body
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"GET {path} {params or ''}: HTTP {exc.code}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"GET {path} {params or ''}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, timeout: float = 5.0) -> Result:
        """An instant query (``/api/v1/query``): the samples of the vector; a scalar or string
        becomes one sample without labels. Raises ``PrometheusError`` on an error status."""
        data = self._get("/api/v1/query", {"query": expr}, timeout)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets(self, timeout: float = 5.0) -> Result:
        """The active targets, each with ``scrapeUrl``, ``health`` (up/down/unknown),
        ``lastError``, ``lastScrape``, ``labels``..."""
        return list(self._get("/api/v1/targets", {"state": "active"}, timeout)["activeTargets"])

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[Result], bool] = bool,
        timeout: float = 15.0,
        interval: float = 0.1,
    ) -> Result:
        """Query ``expr`` until ``predicate(result)`` holds; its result. ``TimeoutError`` (with the
        last result, the targets and the log) when the deadline passes first."""
        return self._poll(lambda: self.query(expr), predicate, timeout, interval, f"query {expr!r}")

    def wait_for_targets(
        self,
        predicate: Callable[[Result], bool],
        timeout: float = 15.0,
        interval: float = 0.1,
    ) -> Result:
        """Read the active targets until ``predicate(targets)`` holds (e.g. all ``up``)."""
        return self._poll(self.targets, predicate, timeout, interval, "targets")

    def _poll(
        self,
        read: Callable[[], Result],
        predicate: Callable[[Result], bool],
        timeout: float,
        interval: float,
        what: str,
    ) -> Result:
        deadline = time.monotonic() + timeout
        while True:
            result = read()
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                break
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"prometheus is not running; log:\n{self.log_tail()}")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        try:
            targets: Any = self.targets()
        except (OSError, PrometheusError) as exc:
            targets = repr(exc)
        raise TimeoutError(
            f"{what}: condition not met within {timeout} s; last result: {result}; "
            f"targets: {targets}; log:\n{self.log_tail()}"
        )
