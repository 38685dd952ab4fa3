"""A hub subclass's namespace: the documented public names only, and a few underscored ones.

The list is the table "What a hub offers" in docs/hubs.md: a public name that appears on ``Hub``
without a line there fails here, and so does a documented name that is gone.
"""

from __future__ import annotations

import re

from hubs.hub import Hub
from tests.e2e.harness import ROOT

SECTION = "## What a hub offers"
#: The most underscored attributes ``Hub`` itself may define (its composed parts and the glue
#: between ASGI events and them); a growing count means a concept is moving back into the class.
MAX_UNDERSCORED = 14


def documented_names() -> set[str]:
    text = (ROOT / "docs/hubs.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    names: set[str] = set()
    for row in re.findall(r"(?m)^\| (.+?) \| .+ \|$", section):
        names.update(re.findall(r"`([a-z_]+)`", row))
    return names


def public_names() -> set[str]:
    hub = Hub()
    hub.scope, hub.base_send, hub.channel_layer, hub.channel_name = {}, None, None, None  # as __call__ sets
    return {n for n in set(dir(Hub)) | set(vars(hub)) if not n.startswith("_")}


def test_every_public_name_of_hub_is_documented_and_every_documented_one_exists():
    documented = documented_names()
    assert len(documented) > 20  # the table was read
    public = public_names()
    assert sorted(public - documented) == [], "undocumented public names on Hub"
    assert sorted(documented - public) == [], "documented names Hub no longer has"


def test_hub_keeps_few_underscored_names():
    hub = Hub()
    own = {n for n in set(vars(Hub)) | set(vars(hub)) if n.startswith("_") and not n.startswith("__")}
    assert len(own) <= MAX_UNDERSCORED, sorted(own)


def test_a_subclass_adds_only_its_own_names():
    class ChatHub(Hub):
        async def say(self, text: str) -> str:
            return text

    assert public_names() | {"say"} == {n for n in dir(ChatHub) if not n.startswith("_")} | {
        "scope", "base_send", "channel_layer", "channel_name", "context", "clients", "groups"
    }
