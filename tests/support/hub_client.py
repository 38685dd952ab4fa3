"""A SignalR client over Channels' ``WebsocketCommunicator``, for hub tests without a server."""

from __future__ import annotations

import itertools
from typing import Any

from channels.testing import WebsocketCommunicator

from hubs.protocol import (
    CompletionMessage,
    InvocationMessage,
    PingMessage,
    StreamInvocationMessage,
    get_protocol,
)

TIMEOUT = 3.0


class HubClient:
    """Handshake, invoke, and read hub messages; every wait has a timeout."""

    def __init__(self, communicator: WebsocketCommunicator, protocol: str = "json") -> None:
        self.communicator = communicator
        self.protocol = get_protocol(protocol)
        self.decoder = self.protocol.decoder(10 * 1024 * 1024)
        self.ids = itertools.count()
        self.pending: list[Any] = []
        self.events: list[Any] = []  # messages set aside while waiting for a completion

    async def connect(self) -> tuple[bool, int | None]:
        return await self.communicator.connect(timeout=TIMEOUT)

    async def handshake(self, version: int = 1, *, binary: bool | None = None) -> dict[str, Any]:
        import json

        request = json.dumps({"protocol": self.protocol.name, "version": version}) + "\x1e"
        if binary if binary is not None else False:
            await self.communicator.send_to(bytes_data=request.encode())
        else:
            await self.communicator.send_to(text_data=request)
        frame = await self.communicator.receive_output(timeout=TIMEOUT)
        assert frame["type"] == "websocket.send", frame
        data: bytes = frame.get("bytes") or frame["text"].encode()
        head, sep, rest = data.partition(b"\x1e")
        assert sep, data
        if rest:
            self.pending.extend(self.decoder.feed(rest))
        return json.loads(head)

    async def send(self, *messages: Any) -> None:
        data = self.protocol.encode_many(messages)
        if self.protocol.transfer_format == "Text":
            await self.communicator.send_to(text_data=data.decode())
        else:
            await self.communicator.send_to(bytes_data=data)

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.communicator.send_to(text_data=data)
        else:
            await self.communicator.send_to(bytes_data=data)

    async def receive(self, timeout: float = TIMEOUT) -> Any:
        """The next hub message (frames may carry several)."""
        while not self.pending:
            frame = await self.communicator.receive_output(timeout=timeout)
            if frame["type"] == "websocket.close":
                raise ConnectionError(f"closed: {frame}")
            data = frame.get("bytes") if frame.get("bytes") is not None else frame["text"]
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def receive_skipping_pings(self, timeout: float = TIMEOUT) -> Any:
        while True:
            message = await self.receive(timeout)
            if not isinstance(message, PingMessage):
                return message

    async def invoke(self, target: str, *args: Any) -> CompletionMessage:
        invocation_id = str(next(self.ids))
        await self.send(InvocationMessage(target=target, arguments=list(args), invocation_id=invocation_id))
        while True:
            message = await self.receive_skipping_pings()
            if isinstance(message, CompletionMessage) and message.invocation_id == invocation_id:
                return message
            self.events.append(message)  # not ours: keep for the caller
            if len(self.events) > 1000:
                raise AssertionError("no completion among 1000 messages")

    async def next_event(self, timeout: float = TIMEOUT) -> Any:
        """The next message that is not a Ping, set-aside ones first."""
        if self.events:
            return self.events.pop(0)
        return await self.receive_skipping_pings(timeout)

    async def nothing_more(self, timeout: float = 0.2) -> bool:
        """True when no message arrives within ``timeout`` (the application keeps running, unlike
        a timed-out ``receive``, which cancels it)."""
        if self.events or self.pending:
            return False
        return await self.communicator.receive_nothing(timeout=timeout)

    async def stream(self, target: str, *args: Any) -> str:
        invocation_id = str(next(self.ids))
        await self.send(
            StreamInvocationMessage(target=target, arguments=list(args), invocation_id=invocation_id)
        )
        return invocation_id

    async def close(self) -> None:
        await self.communicator.disconnect(timeout=TIMEOUT)
