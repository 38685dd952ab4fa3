"""A remote-controlled signalrcore client for the end-to-end tests (the counterpart of ``js_driver.mjs``).

python signalrcore_driver.py '<json config>'
  config: {url, token, protocol: "json"|"messagepack", events: [names], reconnect: [delays ms] | null,
           keepAliveMs}
stdout: one JSON object per line, {"event": ...}: connected, message, result, error, sent, state,
        reconnecting, reconnected, closed, stopped, start-failed.
stdin:  one JSON command per line: {"cmd": "invoke"|"send"|"state", "id", "method", "args"} or
        {"cmd": "stop"}; end of input stops the client too.

signalrcore is thread based: ``start()`` returns once the WebSocket is open, before the handshake
is answered, and every callback runs on the library's receive thread. Its quirks, as this driver
sees them:

* left to its defaults it builds its protocol from the negotiate answer, with the negotiate version
  (0) as its handshake version, which the server accepts as ASP.NET does (any version up to the
  protocol's own); the driver only names the encoding for MessagePack;
* a failed invocation reaches only the global ``on_error`` callback (with the Completion, whose
  invocation id the driver chose), a successful one only the invocation's own callback;
* it has no fire-and-forget invocation: ``send()`` is an alias of ``invoke()``, so the server
  answers a ``send`` and the driver drops that answer;
* it has no "reconnecting" callback: the driver reports one when the transport's state says so;
* an invocation that a connection loss cuts short is never answered, so the driver answers it
  with the JS client's error message.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from signalrcore.hub.base_hub_connection import BaseHubConnection
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.messages.completion_message import CompletionMessage
from signalrcore.transport.base_transport import TransportState
from signalrcore.types import HubProtocolEncoding

CONNECTION_LOST = "Invocation canceled due to the underlying connection being closed."
NOT_CONNECTED = "Cannot send data if the connection is not in the 'Connected' State."
START_TIMEOUT = 15.0
STOP_WAIT = 1.0

_output = threading.Lock()


def emit(event: dict[str, Any]) -> None:
    line = json.dumps(event, default=str)
    with _output:
        print(line, flush=True)


class Driver:
    """One signalrcore connection driven by the commands on stdin."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.reconnect: list[int] | None = config.get("reconnect") or None  # [] retries nothing
        token = str(config["token"])
        builder = (
            HubConnectionBuilder()
            .with_url(config["url"], options={"access_token_factory": lambda: token})
            .configure_logging(logging.ERROR)
        )
        if config.get("protocol") == "messagepack":
            # The encoding only: signalrcore still builds the protocol (and its version) itself.
            builder = builder.with_hub_protocol(HubProtocolEncoding.binary)
        if self.reconnect is not None:
            builder = builder.with_automatic_reconnect(
                {"type": "interval", "intervals": [delay / 1000 for delay in self.reconnect]}
            )
        if config.get("keepAliveMs"):
            builder.keep_alive_interval = config["keepAliveMs"] / 1000
        self.connection: BaseHubConnection = builder.build()
        for name in config.get("events") or []:
            self.connection.on(name, self._message_handler(name))
        self.connection.on_open(self._on_open)
        self.connection.on_reconnect(self._on_reconnect)
        self.connection.on_close(self._on_close)
        self.connection.on_error(self._on_error)

        self.lock = threading.Lock()
        self.opened = threading.Event()
        self.state = "Disconnected"
        self.pending: dict[str, Any] = {}  # invocation id -> command id, until answered
        self.stopping = False
        self.closed = threading.Event()

    def _message_handler(self, name: str) -> Callable[[list[Any]], None]:
        def handler(arguments: list[Any]) -> None:
            emit({"event": "message", "target": name, "payload": arguments[0] if arguments else None})

        return handler

    def connection_id(self) -> str | None:
        # The transport keeps the id negotiated last (negotiate version 0: the connectionId).
        transport = self.connection.transport
        return getattr(transport, "connection_id", None) if transport is not None else None

    def _on_open(self) -> None:
        self.state = "Connected"
        self.opened.set()

    def _on_reconnect(self) -> None:
        if self.state != "Reconnecting":
            emit({"event": "reconnecting", "error": None})
        self.state = "Connected"
        emit({"event": "reconnected", "connectionId": self.connection_id()})

    def _on_close(self) -> None:
        if self.closed.is_set() or not self.opened.is_set():
            return
        self.closed.set()
        self.state = "Disconnected"
        self._cancel_pending()
        emit({"event": "closed", "error": None})

    def _on_error(self, message: Any) -> None:
        if not isinstance(message, CompletionMessage):
            return
        with self.lock:
            command_id = self.pending.pop(message.invocation_id, None)
        if command_id is not None:
            emit({"event": "error", "id": command_id, "message": message.error})

    def _cancel_pending(self) -> None:
        with self.lock:
            cancelled = list(self.pending.values())
            self.pending.clear()
        for command_id in cancelled:
            emit({"event": "error", "id": command_id, "message": CONNECTION_LOST})

    def watch_reconnects(self) -> None:
        """Report ``reconnecting`` when the transport starts reconnecting (a daemon thread)."""
        while not self.closed.is_set():
            transport = self.connection.transport
            if (
                self.state == "Connected"
                and transport is not None
                and transport.state == TransportState.reconnecting
            ):
                self.state = "Reconnecting"
                self._cancel_pending()
                emit({"event": "reconnecting", "error": None})
            time.sleep(0.05)

    def start(self) -> bool:
        self.state = "Connecting"
        try:
            self.connection.start()
        except Exception as error:
            emit({"event": "start-failed", "message": describe(error)})
            return False
        # start() returns once the socket is open; the handshake answer arrives on the receive
        # thread. A refused handshake leaves the transport disconnected without any callback.
        deadline = time.monotonic() + START_TIMEOUT
        while not self.opened.wait(0.05):
            transport = self.connection.transport
            if transport is None or transport.state == TransportState.disconnected:
                emit({"event": "start-failed", "message": "The handshake failed."})
                return False
            if time.monotonic() > deadline:
                emit({"event": "start-failed", "message": f"No handshake answer within {START_TIMEOUT} s."})
                return False
        emit({"event": "connected", "connectionId": self.connection_id()})
        if self.reconnect is not None:
            threading.Thread(target=self.watch_reconnects, daemon=True).start()
        return True

    def stop(self) -> None:
        self.stopping = True
        # stop() closes the socket, then joins the receive thread, which stays blocked in recv()
        # until the server's next frame (up to a keep-alive interval): closing a socket does not
        # wake a recv() in another thread on Linux. So wait a little only; the process exit that
        # follows closes the connection for good.
        stopper = threading.Thread(target=self.connection.stop, daemon=True)
        stopper.start()
        stopper.join(STOP_WAIT)
        self._on_close()  # ``closed``, if stop() has not reported it yet

    def handle(self, command: dict[str, Any]) -> None:
        cmd, command_id = command.get("cmd"), command.get("id")
        method, args = str(command.get("method")), list(command.get("args") or [])
        try:
            if cmd in ("send", "invoke") and self.state != "Connected":
                # As the JS client: no queueing of invocations while (re)connecting or closed.
                raise RuntimeError(NOT_CONNECTED)
            if cmd == "send":
                self.connection.send(method, args)
                emit({"event": "sent", "id": command_id})
            elif cmd == "invoke":
                self._invoke(command_id, method, args)
            elif cmd == "state":
                emit(
                    {
                        "event": "state",
                        "id": command_id,
                        "state": self.state,
                        "connectionId": self.connection_id(),
                    }
                )
        except Exception as error:
            emit({"event": "error", "id": command_id, "message": describe(error)})

    def _invoke(self, command_id: Any, method: str, args: list[Any]) -> None:
        # The driver picks the invocation id (invoke() accepts one) so that the error, which only
        # the global on_error callback receives, can be traced back to this command.
        invocation_id = str(uuid.uuid4())

        def on_completion(message: CompletionMessage) -> None:
            with self.lock:
                answered = self.pending.pop(invocation_id, None) is not None
            if answered:
                emit({"event": "result", "id": command_id, "result": message.result})

        with self.lock:
            self.pending[invocation_id] = command_id
        try:
            self.connection.invoke(method, args, on_invocation=on_completion, invocation_id=invocation_id)
        except BaseException:
            with self.lock:
                self.pending.pop(invocation_id, None)
            raise


def describe(error: BaseException) -> str:
    return str(error) or repr(error)


def main() -> int:
    driver = Driver(json.loads(sys.argv[1]))
    if not driver.start():
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command.get("cmd") == "stop":
            driver.stop()
            emit({"event": "stopped"})
            return 0
        driver.handle(command)
    driver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
