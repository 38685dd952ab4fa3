"""A hub for tests of the base class: every feature, no domain logic."""

from __future__ import annotations

import asyncio
from typing import Any

from hubs.errors import HubError
from hubs.hub import Hub
from hubs.methods import hub_method

EVENTS: list[tuple[str, Any]] = []


class EchoHub(Hub):
    hub_name = "echo"

    async def on_connection_established(self, context: Any) -> None:
        EVENTS.append(("established", context.connection_id))
        if context.user_agent == "fail-on-connect":
            raise RuntimeError("boom")

    async def on_connection_lost(self, context: Any, exc: BaseException | None) -> None:
        EVENTS.append(("lost", context.connection_id))

    @hub_method
    async def echo(self, value: Any) -> Any:
        return value

    @hub_method(name="add")
    async def add_numbers(self, a: int, b: int = 0) -> int:
        return a + b

    @hub_method
    def sync_echo(self, value: Any) -> Any:
        return value

    @hub_method
    async def fail(self, public: bool) -> None:
        if public:
            raise HubError("this is fine to show")
        raise RuntimeError("secret internals")

    @hub_method
    async def join(self, group: str) -> None:
        await self.add_to_group_with_metadata(group, {"joinedBy": self.connection_id})

    @hub_method
    async def leave(self, group: str) -> None:
        await self.groups.discard(group)

    @hub_method
    async def shout(self, group: str, text: str) -> None:
        await self.clients.group(group).asend("Shout", {"text": text, "from_connection": self.connection_id})

    @hub_method
    async def tell_others(self, text: str) -> None:
        await self.clients.others.asend("Told", {"text": text})

    @hub_method
    async def tell_me(self, text: str) -> None:
        await self.clients.caller.asend("Told", {"text": text})

    @hub_method
    async def whoami(self) -> dict[str, Any]:
        ctx = self.context
        return {
            "connection_id": ctx.connection_id,
            "user_id": ctx.user_id,
            "protocol": ctx.protocol,
            "groups": ctx.groups,
        }

    @hub_method
    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @hub_method
    async def count(self, n: int, delay: float = 0.0):
        for i in range(n):
            yield i
            if delay:
                await asyncio.sleep(delay)

    @hub_method
    async def broken_stream(self):
        yield 1
        raise HubError("stream broke")

    @hub_method
    async def confirm(self, text: str, timeout: float) -> bool:
        return await self.send_with_confirmation("PleaseConfirm", {"text": text}, timeout)

    async def not_exposed(self) -> str:
        return "private"

    async def _hidden(self) -> str:
        return "hidden"
