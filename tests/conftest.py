"""Shared fixtures: users, tokens, tasks, and hub clients over Channels' communicator."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from conduit_rt.demo.models import Task
from hubs.auth.tokens import issue_token
from hubs.routing import websocket_application
from tests.support.hub_client import HubClient

REDIS_DB = os.environ.get("CONDUIT_TEST_REDIS_DB", "9")


def _redis_ping() -> bool:
    return (
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        == "PONG"
    )


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis on 127.0.0.1:6379 (started when missing), database ``CONDUIT_TEST_REDIS_DB`` emptied."""
    if not _redis_ping():
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
            timeout=10,
        )
        deadline = time.monotonic() + 10
        while not _redis_ping():
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
    subprocess.run(["redis-cli", "-n", REDIS_DB, "flushdb"], check=True, capture_output=True, timeout=10)
    return f"redis://127.0.0.1:6379/{REDIS_DB}"


TEST_HUBS = {
    "hubs/tasks": "conduit_rt.demo.hubs.TaskHub",
    "hubs/video-generation": "conduit_rt.demo.hubs.VideoGenerationHub",
    "hubs/echo": "tests.support.echo_hub.EchoHub",
}


@pytest.fixture
def ws_app():
    return websocket_application(TEST_HUBS)


@pytest.fixture
def make_user(db) -> Callable[..., object]:
    def make(username: str = "alice"):
        return get_user_model().objects.create_user(username=username, password="pw")

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def alice_token(alice) -> str:
    return issue_token(alice)


@pytest.fixture
def alice_task(alice) -> Task:
    return Task.objects.create(owner=alice)


@pytest.fixture
def bob_task(bob) -> Task:
    return Task.objects.create(owner=bob)


@pytest.fixture
async def hub_client(ws_app) -> AsyncIterator[Callable[..., object]]:
    """Factory: ``await hub_client(path, token=..., protocol=...)`` → connected, handshaken client."""
    opened: list[HubClient] = []

    async def open_client(
        path: str = "/hubs/tasks",
        *,
        token: str | None = None,
        protocol: str = "json",
        headers: list[tuple[bytes, bytes]] | None = None,
        handshake: bool = True,
    ) -> HubClient:
        all_headers = list(headers or [])
        if token is not None:
            all_headers.append((b"authorization", f"Bearer {token}".encode()))
        communicator = WebsocketCommunicator(ws_app, path, headers=all_headers)
        client = HubClient(communicator, protocol)
        connected, _ = await client.connect()
        assert connected, f"connection to {path} refused"
        opened.append(client)
        if handshake:
            assert await client.handshake() == {}
        return client

    yield open_client
    for client in opened:
        if client.communicator.future.done():
            continue  # its application ended (or a test cancelled it, as a server's kill does)
        try:
            await client.close()
        except Exception:
            pass


@pytest.fixture
def async_db():
    return database_sync_to_async


@pytest.fixture(autouse=True)
def no_embedded_retry_runner(monkeypatch):
    """Communicator tests run retry passes themselves, at times they choose; the embedded runner
    (one loop per server) is tested on its own in tests/integration/test_acked_delivery.py."""
    from hubs.runtime import runtime

    monkeypatch.setattr(runtime(), "autostart_runners", False)


@pytest.fixture
def fresh_delivery_stores():
    """Empty delivery stores and breakers for one test: built again from the settings in force,
    so entries other tests left in the process's memory stay out; forgotten again afterwards."""
    from hubs.runtime import runtime

    runtime().reset()
    yield
    runtime().reset()
