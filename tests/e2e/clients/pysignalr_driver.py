"""A remote-controlled pysignalr client for the end-to-end tests (the counterpart of ``js_driver.mjs``).

python pysignalr_driver.py '<json config>'
  config: {url, token, protocol: "json"|"messagepack", events: [names], reconnect: [delays ms] | null,
           keepAliveMs}
stdout: one JSON object per line, {"event": ...}: connected, message, result, error, sent, state,
        reconnecting, reconnected, closed, stopped, start-failed.
stdin:  one JSON command per line: {"cmd": "invoke"|"send"|"state", "id", "method", "args"} or
        {"cmd": "stop"}; end of input stops the client too.

pysignalr quirks this driver works around:

* the ``access_token_factory`` token reaches the headers only after the first negotiate and
  WebSocket upgrade, so the token is passed as a static ``Authorization`` header instead;
* pysignalr does not expose the connection id, so ``connected``/``reconnected`` carry ``null``;
* it always reconnects by itself and has no ``stop()``: without ``reconnect`` in the config a lost
  connection is reported as ``closed`` and the client is shut down, as the JS client would do, and
  stopping means cancelling ``SignalRClient.run()``;
* an invocation that the connection loss cuts short is never answered by pysignalr, so the driver
  answers it with the JS client's error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage, Message
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

CONNECTION_LOST = "Invocation canceled due to the underlying connection being closed."
NOT_CONNECTED = "Cannot send data if the connection is not in the 'Connected' State."


def emit(event: dict[str, Any]) -> None:
    print(json.dumps(event, default=str), flush=True)


class Driver:
    """One pysignalr connection driven by the commands on stdin."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.reconnect: list[int] | None = config.get("reconnect") or None  # [] retries nothing
        protocol = MessagepackProtocol() if config.get("protocol") == "messagepack" else JSONProtocol()
        options: dict[str, Any] = {}
        if config.get("keepAliveMs"):
            options["signalr_ping_interval"] = config["keepAliveMs"] / 1000
        if self.reconnect is None:
            # Fail the start at once when the WebSocket upgrade is refused (no reconnects anyway).
            options["retry_count"] = 1
        elif self.reconnect:
            # pysignalr has no list of delays: when reconnecting to the old URL is refused it
            # negotiates again, up to retry_count times, sleeping retry_sleep (times 1.1 each time).
            options["retry_count"] = len(self.reconnect) + 1
            options["retry_sleep"] = max(sum(self.reconnect) / len(self.reconnect), 1000) / 1000
        self.client = SignalRClient(
            config["url"],
            protocol=protocol,
            headers={"Authorization": f"Bearer {config['token']}"},
            **options,
        )
        for name in config.get("events") or []:
            self.client.on(name, self._message_handler(name))
        self.client.on_open(self._on_open)
        self.client.on_close(self._on_close)
        # Without a global error callback pysignalr raises on every failed completion (and the
        # connection dies); the error is delivered to the invocation's own callback as well, below.
        self.client.on_error(self._ignore_error)
        self.state = "Disconnected"
        self.opened = asyncio.Event()
        self.pending: dict[int, Any] = {}  # unanswered invocations: token -> command id
        self.tokens = itertools.count()
        self.stopping = False
        self.run_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def _message_handler(self, name: str) -> Callable[[list[Any]], Awaitable[None]]:
        async def handler(arguments: list[Any]) -> None:
            emit({"event": "message", "target": name, "payload": arguments[0] if arguments else None})

        return handler

    async def _on_open(self) -> None:
        if self.state == "Reconnecting":
            emit({"event": "reconnected", "connectionId": None})
        self.state = "Connected"
        self.opened.set()

    async def _on_close(self) -> None:
        # pysignalr calls this on every move to "reconnecting" or "disconnected", including the
        # failed attempts of a reconnect; only the first one after being connected counts.
        if self.stopping or self.state != "Connected":
            return
        self._cancel_pending()
        if self.reconnect is None:
            self.state = "Disconnected"
            emit({"event": "closed", "error": None})
            if self.run_task is not None:
                self.run_task.cancel()
            return
        self.state = "Reconnecting"
        emit({"event": "reconnecting", "error": None})

    async def _ignore_error(self, message: CompletionMessage) -> None:
        return None

    def _cancel_pending(self) -> None:
        for command_id in self.pending.values():
            emit({"event": "error", "id": command_id, "message": CONNECTION_LOST})
        self.pending.clear()

    async def start(self) -> bool:
        self.state = "Connecting"
        self.run_task = asyncio.create_task(self.client.run())
        opened = asyncio.create_task(self.opened.wait())
        await asyncio.wait({self.run_task, opened}, return_when=asyncio.FIRST_COMPLETED)
        if self.opened.is_set():
            emit({"event": "connected", "connectionId": None})
            self.run_task.add_done_callback(self._run_ended)
            return True
        opened.cancel()
        error = self.run_task.exception() if not self.run_task.cancelled() else None
        emit({"event": "start-failed", "message": describe(error)})
        return False

    def _run_ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping or task.cancelled():
            return
        self.state = "Disconnected"
        self._cancel_pending()
        emit({"event": "closed", "error": describe(task.exception())})

    async def stop(self) -> None:
        if self.stopping:
            return
        was_open = self.state != "Disconnected"
        self.stopping = True
        self._cancel_pending()
        if self.run_task is not None and not self.run_task.done():
            self.run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.run_task
        # Cancelling run() leaves websockets' connection iterator suspended; once collected it
        # closes the WebSocket (a close frame with code 1011, as it ends on an exception): give
        # that a moment to finish.
        await asyncio.sleep(0.1)
        self.state = "Disconnected"
        if was_open:
            emit({"event": "closed", "error": None})

    async def handle(self, command: dict[str, Any]) -> None:
        cmd, command_id = command.get("cmd"), command.get("id")
        method, args = str(command.get("method")), list(command.get("args") or [])
        try:
            if cmd in ("send", "invoke") and self.state != "Connected":
                # As the JS client: no queueing of invocations while (re)connecting or closed.
                raise RuntimeError(NOT_CONNECTED)
            if cmd == "send":
                await self.client.send(method, args)
                emit({"event": "sent", "id": command_id})
            elif cmd == "invoke":
                await self._invoke(command_id, method, args)
            elif cmd == "state":
                emit({"event": "state", "id": command_id, "state": self.state, "connectionId": None})
        except Exception as error:
            emit({"event": "error", "id": command_id, "message": describe(error)})

    async def _invoke(self, command_id: Any, method: str, args: list[Any]) -> None:
        # With a callback, SignalRClient.send() sends an invocation with an id of its own and routes
        # the Completion with that id to the callback: ``error`` set when the hub method failed,
        # ``result`` otherwise (None for no result). The closure knows which command it answers.
        token = next(self.tokens)
        self.pending[token] = command_id

        async def on_completion(message: Message) -> None:
            assert isinstance(message, CompletionMessage)
            if self.pending.pop(token, None) is None:
                return  # already answered as cancelled by a connection loss
            if message.error is not None:
                emit({"event": "error", "id": command_id, "message": message.error})
            else:
                emit({"event": "result", "id": command_id, "result": message.result})

        try:
            await self.client.send(method, args, on_invocation=on_completion)
        except BaseException:
            self.pending.pop(token, None)
            raise

    async def serve(self, commands: asyncio.Queue[dict[str, Any] | None]) -> None:
        while True:
            command = await commands.get()
            if command is None or command.get("cmd") == "stop":
                await self.stop()
                if command is not None:
                    emit({"event": "stopped"})
                return
            task = asyncio.create_task(self.handle(command))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


def describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    # pysignalr's exceptions are dataclasses whose str() is empty: the repr names them and their fields.
    return str(error) or repr(error)


def read_commands(loop: asyncio.AbstractEventLoop, commands: asyncio.Queue[dict[str, Any] | None]) -> None:
    """Feed stdin's JSON lines to the queue; ``None`` at end of input. Runs in a daemon thread.

    It reads the file descriptor directly: a daemon thread blocked in ``sys.stdin.readline()``
    holds the buffer's lock and can abort the interpreter's shutdown.
    """
    buffer = b""
    while True:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                loop.call_soon_threadsafe(commands.put_nowait, json.loads(line))
    loop.call_soon_threadsafe(commands.put_nowait, None)


async def main() -> int:
    config = json.loads(sys.argv[1])
    driver = Driver(config)
    if not await driver.start():
        return 1
    commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=read_commands, args=(loop, commands), daemon=True).start()
    await driver.serve(commands)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
