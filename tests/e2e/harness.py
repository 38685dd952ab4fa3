"""End-to-end harness: a real site (daphne or uvicorn, its own SQLite file, Redis) and remote-controlled
clients.

Everything runs as separate processes on loopback, talking to each other only as a deployment
would: HTTP, WebSockets, the Redis channel layer and management commands.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CLIENTS = Path(__file__).resolve().parent / "clients"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Site:
    """One deployment's configuration: environment, database, Redis; runs commands and servers."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.servers: list[Server] = []
        self.processes: list[subprocess.Popen[Any]] = []

    def manage(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout.strip()

    def server(
        self,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        kind: str = "daphne",
    ) -> Server:
        """A server of this site, started: ``kind`` is ``manage.py serve --server`` (daphne or uvicorn)."""
        server = Server(self, port or free_port(), env or {}, args, kind=kind)
        self.servers.append(server)
        server.start()
        return server

    def token(self, username: str) -> str:
        return self.manage("issue_token", username, "--create")

    def shell(self, code: str, timeout: float = 60) -> str:
        """Run Python ``code`` in ``manage.py shell`` with this site's settings; its stdout."""
        return self.manage("shell", "-v", "0", "-c", code, timeout=timeout)

    def spawn(
        self, argv: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[Any]:
        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def celery_worker(self, log_name: str = "celery-worker.log") -> subprocess.Popen[Any]:
        """A Celery worker of this site: one process (``solo``), quiet, no chatter between workers."""
        return self.spawn(
            [PYTHON, "-m", "celery", "-A", "conduit_rt", "worker", "-P", "solo", "--without-heartbeat",
             "--without-gossip", "--without-mingle", "-l", "WARNING"],
            log_name,
        )  # fmt: skip

    def celery_beat(self, log_name: str = "celery-beat.log") -> subprocess.Popen[Any]:
        """Celery beat for this site (the retry passes), its schedule file in the site's folder."""
        schedule = str(self.workdir / "beat-schedule")
        return self.spawn(
            [PYTHON, "-m", "celery", "-A", "conduit_rt", "beat", "-s", schedule, "-l", "WARNING"], log_name
        )

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        for process in self.processes:
            stop_process(process)


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


class RedisServer:
    """A redis-server of a test's own on a free port, which the test can stop and start again on
    the same port. ``append_only``: persisted to an append-only file in ``workdir`` (a restart
    keeps the data), else nothing persists."""

    def __init__(self, workdir: Path, *, append_only: bool = False) -> None:
        self.workdir = workdir
        self.append_only = append_only
        self.port = free_port()
        self.process: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.append_only else [
            "--appendonly", "no"
        ]  # fmt: skip
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
             "--save", "", *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port, 15, self.process)

    def stop(self) -> None:
        """Stop it as an operator would (SHUTDOWN writes the append-only file)."""
        if self.process is None:
            return
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True, timeout=15, check=False
        )
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process(self.process, signal.SIGKILL)


SERVER_KINDS = ("daphne", "uvicorn")


class Server:
    """A server process (``manage.py serve --server KIND``: daphne or uvicorn) on a loopback port.

    ``stop`` sends SIGTERM (both servers close their WebSockets, so the hubs tear down) and
    SIGKILL 10 s later; ``restart`` starts it again on the same port, appending to the same log."""

    def __init__(
        self, site: Site, port: int, env: dict[str, str], args: tuple[str, ...] = (), kind: str = "daphne"
    ) -> None:
        assert kind in SERVER_KINDS, kind
        self.site = site
        self.port = port
        self.env = env
        self.args = args
        self.kind = kind
        self.process: subprocess.Popen[Any] | None = None
        self.url = f"http://127.0.0.1:{port}"

    @property
    def log_path(self) -> Path:
        return self.site.workdir / f"{self.kind}-{self.port}.log"

    def logs(self) -> str:
        """What the server printed so far (stdout and stderr, every start of it)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30) -> None:
        self.process = self.site.spawn(
            [PYTHON, "manage.py", "serve", "--server", self.kind, "--port", str(self.port),
             "--no-access-log", *self.args],
            self.log_path.name,
            self.env,
        )  # fmt: skip
        wait_for_port(self.port, timeout, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()

    def post_json(
        self, path: str, token: str, body: dict[str, Any] | None = None, timeout: float = 10
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())

    def create_task(self, token: str) -> str:
        status, body = self.post_json("/api/tasks/", token)
        assert status == 201, body
        return str(body["taskId"])


class ClientProcess:
    """A client driver process (see ``clients/``): JSON commands in, JSON events out."""

    def __init__(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.ids = itertools.count()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.events.put(json.loads(line))
                    continue
                except ValueError:
                    pass
            self.stderr.append(line)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.rstrip())

    def command(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def expect(self, event: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        """The first event of this kind (and these fields) not yet taken, waiting up to ``timeout``."""
        for index, seen in enumerate(self.seen):
            if _matches(seen, event, match):
                return self.seen.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: no {event} {match or ''} within {timeout} s; other events: {self.seen[-10:]}; "
                    f"output: {self.stderr[-20:]}"
                )
            try:
                item = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.process.poll() is not None and self.events.empty():
                    time.sleep(0.2)  # let the reader threads take the last lines
                    if self.events.empty():
                        raise AssertionError(
                            f"{self.name}: exited ({self.process.returncode}) without {event} {match or ''}; "
                            f"output: {self.stderr[-20:]}"
                        ) from None
                continue
            if _matches(item, event, match):
                return item
            self.seen.append(item)

    def idle(self, seconds: float) -> None:
        """Let the connection sit idle for ``seconds`` (the idle time is what a test examines)."""
        self.assert_no("__never__", within=seconds)

    def assert_no(self, event: str, within: float) -> None:
        """Fail if an event of this kind arrives within ``within`` seconds (the wait is the point)."""
        try:
            item = self.expect(event, timeout=within)
        except AssertionError:
            return
        raise AssertionError(f"{self.name}: unexpected {item}")

    def _drain(self) -> None:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return

    def has(self, event: str) -> bool:
        """Whether an event of this kind arrived (without waiting or taking it)."""
        self._drain()
        return any(e.get("event") == event for e in self.seen)

    def take_events(self, event: str) -> list[dict[str, Any]]:
        """Take the events of this kind received so far (without waiting), in order."""
        self._drain()
        taken = [e for e in self.seen if e.get("event") == event]
        self.seen = [e for e in self.seen if e.get("event") != event]
        return taken

    def take_messages(self, target: str) -> list[dict[str, Any]]:
        """Take the server events of ``target`` received so far (without waiting), in order."""
        self._drain()
        taken = [e for e in self.seen if e.get("event") == "message" and e.get("target") == target]
        self.seen = [e for e in self.seen if e not in taken]
        return [e["payload"] for e in taken]

    def invoke(self, method: str, *args: Any, timeout: float = 10) -> dict[str, Any]:
        """Invoke a hub method; the ``result`` or ``error`` event that answers it."""
        call_id = str(next(self.ids))
        self.command(cmd="invoke", id=call_id, method=method, args=list(args))
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.01, deadline - time.monotonic())
            for kind in ("result", "error"):
                for index, seen in enumerate(self.seen):
                    if seen.get("event") == kind and seen.get("id") == call_id:
                        return self.seen.pop(index)
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name}: no answer to {method} within {timeout} s; output: {self.stderr[-20:]}"
                )
            try:
                self.seen.append(self.events.get(timeout=min(0.2, remaining)))
            except queue.Empty:
                pass

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.command(cmd="stop")
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                stop_process(self.process)


def _matches(item: dict[str, Any], event: str, match: dict[str, Any]) -> bool:
    return item.get("event") == event and all(item.get(k) == v for k, v in match.items())


TASK_EVENTS = ["TaskStarted", "TaskProgress", "TaskCompleted", "TaskFailed", "TaskCancelled"]


def scrape(server: Server, timeout: float = 5) -> dict[str, float]:
    """``GET /metrics`` of ``server`` → {"name{labels}": value} of its conduit_ samples."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=timeout) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("conduit_"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def run_node_script(script: str, config: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    """Run ``clients/<script>`` (a one-shot browser or client script) and return the JSON object
    it prints last, or ``{"stderr": ...}`` when it printed none."""
    run = subprocess.run(
        ["node", str(CLIENTS / script), json.dumps(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"stderr": run.stderr}


def js_client(
    url: str, token: str, *, client: str = "10", protocol: str = "json", **options: Any
) -> ClientProcess:
    config = {
        "url": url,
        "token": token,
        "client": client,
        "protocol": protocol,
        "events": TASK_EVENTS,
        **options,
    }
    return ClientProcess(
        ["node", str(CLIENTS / "js_driver.mjs"), json.dumps(config)], f"js{client}-{protocol}"
    )


def py_client(kind: str, url: str, token: str, *, protocol: str = "json", **options: Any) -> ClientProcess:
    config = {"url": url, "token": token, "protocol": protocol, "events": TASK_EVENTS, **options}
    return ClientProcess(
        [PYTHON, str(CLIENTS / f"{kind}_driver.py"), json.dumps(config)], f"{kind}-{protocol}"
    )
