"""What a client's bytes may not do to a real deployment (daphne, Redis cache): over HTTP and WebSockets.

A handshake version as ASP.NET accepts it, a negotiated token raced by several WebSockets on two
servers, an invocation whose target no UTF-8 can hold, and a task body nested 100,000 deep.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from .harness import Server

pytestmark = pytest.mark.e2e

TIMEOUT = 10


def post(server: Server, path: str, token: str, data: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        server.url + path,
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def records(ws: Any) -> list[dict[str, Any]]:
    """The JSON records of the next frame that is not only Pings."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout=TIMEOUT)
        found = [json.loads(r) for r in frame.split("\x1e") if r]
        found = [r for r in found if r.get("type") != 6]
        if found:
            return found


async def invoke(ws: Any, invocation_id: str, target: str, *args: Any) -> dict[str, Any]:
    await ws.send(
        json.dumps({"type": 1, "invocationId": invocation_id, "target": target, "arguments": args}) + "\x1e"
    )
    while True:
        for record in await records(ws):
            if record.get("type") == 3 and record.get("invocationId") == invocation_id:
                return record


def connect(server: Server, token: str, query: str = "") -> Any:
    url = f"ws://127.0.0.1:{server.port}/hubs/tasks{query}"
    return websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=TIMEOUT
    )


@pytest.mark.parametrize(("version", "answer"), [(0, {}), (1, {}), (2, {}), (3, None)])
def test_handshake_versions_as_aspnet_accepts_them(server, tokens, version, answer):
    async def run() -> None:
        async with connect(server, tokens["alice"]) as ws:
            await ws.send(json.dumps({"protocol": "json", "version": version}) + "\x1e")
            reply = json.loads((await asyncio.wait_for(ws.recv(), timeout=TIMEOUT)).rstrip("\x1e"))
            if answer is not None:
                assert reply == answer
                assert (await invoke(ws, "1", "Ping"))["result"]["pong"] == "ok"
            else:
                assert reply == {"error": "The server does not support version 3 of the 'json' protocol."}

    asyncio.run(run())


def test_a_negotiated_token_opens_one_websocket_across_two_servers(site, tokens):
    one, two = site.server(), site.server()
    token = tokens["alice"]
    status, negotiated = post(one, "/hubs/tasks/negotiate?negotiateVersion=1", token, b"")
    assert status == 200, negotiated
    query = f"?id={negotiated['connectionToken']}"

    async def race() -> list[str]:
        async def attempt(server: Server) -> str:
            try:
                async with connect(server, token, query) as ws:
                    await ws.send('{"protocol":"json","version":1}\x1e')
                    assert await asyncio.wait_for(ws.recv(), timeout=TIMEOUT) == "{}\x1e"
                    assert (await invoke(ws, "1", "Ping"))["result"]["pong"] == "ok"
                    return "accepted"
            except InvalidStatus as refused:
                return f"refused {refused.response.status_code}"

        return await asyncio.gather(*(attempt(server) for server in [one, two] * 6))

    outcomes = asyncio.run(race())
    assert sorted(outcomes) == ["accepted"] + ["refused 403"] * 11, outcomes


def test_a_target_no_utf8_can_hold_is_answered_and_the_connection_serves_on(server, tokens):
    async def run() -> None:
        async with connect(server, tokens["alice"]) as ws:
            await ws.send('{"protocol":"json","version":1}\x1e')
            assert await asyncio.wait_for(ws.recv(), timeout=TIMEOUT) == "{}\x1e"
            await ws.send('{"type":1,"invocationId":"bad","target":"\\ud800x","arguments":[]}\x1e')
            [done] = await records(ws)
            assert done["invocationId"] == "bad"
            assert done["error"] == (
                "Failed to invoke '\ufffdx' due to an error on the server. HubException: Method does not exist."
            )
            assert (await invoke(ws, "2", "Ping"))["result"]["pong"] == "ok"

    asyncio.run(run())


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"[" * 100_000, 413, "The body is limited to 16384 bytes."),
        (b"[" * 10_000, 400, "The body is nested too deeply."),
    ],
    ids=["huge", "deep"],
)
def test_task_api_answers_hostile_bodies_with_a_json_error(server, tokens, body, status, error):
    assert post(server, "/api/tasks/", tokens["alice"], body) == (status, {"error": error})
    assert server.create_task(tokens["alice"])  # and it serves on
