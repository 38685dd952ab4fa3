"""``Inbox`` dedupe: an event id seen among the last ``RECENT_IDS`` is not written again; older
ones are forgotten, oldest first."""

from __future__ import annotations

from hubs.inbox import RECENT_IDS, Inbox


class Session:
    open = True

    def __init__(self) -> None:
        self.written: list[str] = []

    async def write_record(self, records) -> None:
        self.written.append(records["json"])


def event(message_id: str) -> dict:
    return {"type": "conduit.deliver", "id": message_id, "records": {"json": message_id}}


async def test_the_last_ids_are_remembered_and_the_oldest_forgotten_first():
    session = Session()
    inbox = Inbox(session, "tasks", lambda: "c1")  # type: ignore[arg-type]
    await inbox.receive({"type": "conduit.deliver", "records": {"json": "no id"}})
    ids = [f"m{i}" for i in range(RECENT_IDS + 1)]
    for message_id in ids:
        await inbox.receive(event(message_id))
    for message_id in (ids[-1], ids[1], "m0"):  # m0 was pushed out by the last one
        await inbox.receive(event(message_id))
    await inbox.receive({**event(ids[-1]), "redeliver": True})
    assert session.written == ["no id", *ids, "m0", ids[-1]]
