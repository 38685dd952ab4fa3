"""``Inbox``: the server events that reach one connection from the channel layer.

Each is written once per connection: an event sent to several of its groups, or replayed by a
resume and also delivered live, is recognised by its ``messageId`` (the last 256 are kept) and
skipped, unless it is a redelivery. While a resume replays a group's history, live events wait
behind the replay, so the client sees the group in ``seq`` order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .delivery.history import Replay, get_history
from .delivery_metrics import record_delivery
from .outbound import encode_outbound
from .session import ProtocolSession

#: How many message ids a connection remembers for dedupe.
RECENT_IDS = 256


class Inbox:
    """Deliveries of one connection of hub ``hub_name``."""

    __slots__ = ("_connection_id", "_held", "_hub_name", "_recent", "_recent_set", "_session")

    def __init__(
        self, session: ProtocolSession, hub_name: str, connection_id: Callable[[], str | None]
    ) -> None:
        self._session = session
        self._hub_name = hub_name
        self._connection_id = connection_id
        # The ids sent last, oldest first, and the same as a set; made with the first id (an
        # empty deque is about 600 bytes, an empty set 200, and many connections never get an
        # event).
        self._recent: deque[str] | None = None
        self._recent_set: set[str] | None = None
        self._held: list[dict[str, Any]] | None = None

    async def receive(self, message: dict[str, Any]) -> None:
        """A ``conduit.deliver`` layer message (``Outbound.layer_message``)."""
        if not self._session.open:
            return
        if self._held is not None:  # a resume is replaying history: live events wait behind it
            self._held.append(message)
            return
        # The hot path: one coroutine level from the router's dispatch to the socket's send.
        if self._wanted(message):
            await self._session.write_record(message["records"])
            record_delivery(self._hub_name, message)

    async def replay(
        self, stream: str, epoch: str | None, last_seq: int, join: Callable[[], Awaitable[None]]
    ) -> Replay:
        """``join`` the group, then send what ``stream`` holds after ``(epoch, last_seq)`` in
        order, holding live events until the replay is out."""
        self._held = []
        try:
            await join()  # first: nothing sent from now on is missed
            replay = await get_history().read_after(stream, epoch, last_seq)
            for entry in replay.entries or ():
                if self._first_time(entry.message_id):
                    assert replay.position is not None
                    body = {**entry.body, "seq": entry.seq, "epoch": replay.position.epoch}
                    await self._session.pace()
                    await self._session.write_outbound(encode_outbound(entry.method, body))
        finally:
            while self._held:
                held, self._held = self._held, []
                for message in held:
                    if self._wanted(message):
                        await self._session.pace()
                        await self._session.write_record(message["records"])
                        record_delivery(self._hub_name, message)
            self._held = None
        return replay

    def _wanted(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` goes to this connection: not excluded, and not sent to it before
        (unless it is a redelivery)."""
        exclude = message.get("exclude")
        if exclude and self._connection_id() in exclude:
            return False
        return self._first_time(message.get("id")) or bool(message.get("redeliver"))

    def _first_time(self, message_id: str | None) -> bool:
        """Record ``message_id`` as sent; False if it already was."""
        if message_id is None:
            return True
        recent, seen = self._recent, self._recent_set
        if recent is None or seen is None:
            recent, seen = self._recent, self._recent_set = deque(maxlen=RECENT_IDS), set()
        elif message_id in seen:
            return False
        elif len(recent) == RECENT_IDS:
            seen.discard(recent[0])
        recent.append(message_id)
        seen.add(message_id)
        return True
