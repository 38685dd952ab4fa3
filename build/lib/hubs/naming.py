"""Map hub-level names (groups, users, connections) onto Channels' group-name rules.

Channels accepts group names of ASCII letters, digits, ``-``, ``_`` and ``.``, under 100
characters. Names from the wire can be anything, so a name made of ``[A-Za-z0-9_-]`` (up to 60
characters) is kept readable as ``…g.<name>``, and any other is hashed as ``…h.<sha256>``; the
``g.``/``h.`` markers keep the two forms from colliding.
"""

from __future__ import annotations

import hashlib
import re

from .conf import conduit_settings
from .errors import InvalidArguments

_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,60}")
MAX_GROUP_NAME_LENGTH = 256


def validate_group_name(name: object) -> str:
    """Return ``name`` if it is acceptable as a hub group name, else raise ``InvalidArguments``."""
    if not isinstance(name, str) or not name:
        raise InvalidArguments("A group name must be a non-empty string.")
    if len(name) > MAX_GROUP_NAME_LENGTH:
        raise InvalidArguments(f"A group name may have at most {MAX_GROUP_NAME_LENGTH} characters.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidArguments("A group name may not contain control characters.")
    return name


def _safe(name: str) -> str:
    if _PLAIN.fullmatch(name):
        return f"g.{name}"
    return "h." + hashlib.sha256(name.encode("utf-8")).hexdigest()[:48]


def group_channel(namespace: str, group: str) -> str:
    """The Channels group of hub group ``group`` in ``namespace``."""
    return f"{conduit_settings.KEY_PREFIX}.{namespace}.{_safe(group)}"


def user_channel(namespace: str, user_id: object) -> str:
    """The Channels group every connection of ``user_id`` joins in ``namespace``."""
    return f"{conduit_settings.KEY_PREFIX}.{namespace}.u.{_safe(str(user_id))}"


def connection_channel(connection_id: str) -> str:
    """The Channels group that holds exactly one connection (ids are URL-safe base64)."""
    return f"{conduit_settings.KEY_PREFIX}.c.{_safe(connection_id)}"


def all_channel(hub_name: str) -> str:
    """The Channels group of every connection to one hub."""
    return f"{conduit_settings.KEY_PREFIX}.{hub_name}.all"
