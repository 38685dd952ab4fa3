"""Type checks for decoded record fields, raising InvalidMessageError that names the field."""

from __future__ import annotations

from typing import Any

from .errors import InvalidMessageError

_TYPE_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    bytes: "binary data",
    list: "an array",
    dict: "an object",
}


def describe(value: object) -> str:
    """Human-readable name of a decoded value's type, for error messages."""
    name = _TYPE_NAMES.get(type(value))
    return name if name is not None else type(value).__name__


def _wrong(field: str, expected: str, value: object) -> InvalidMessageError:
    return InvalidMessageError(f"Expected '{field}' to be {expected}, got {describe(value)}.")


def require_str(value: object, field: str) -> str:
    """A string (possibly empty)."""
    if not isinstance(value, str):
        raise _wrong(field, "a string", value)
    return value


def require_id(value: object, field: str) -> str:
    """A non-empty invocation or stream id."""
    if value is None or value == "":
        raise InvalidMessageError(f"Missing required property '{field}'.")
    return require_str(value, field)


def optional_id(value: object, field: str) -> str | None:
    """An optional invocation id; null and empty mean absent (a non-blocking call)."""
    if value is None or value == "":
        return None
    return require_str(value, field)


def optional_str(value: object, field: str) -> str | None:
    """A string or null."""
    if value is None:
        return None
    return require_str(value, field)


def require_int(value: object, field: str) -> int:
    """An integer; booleans are rejected."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(field, "an integer", value)
    return value


def optional_bool(value: object, field: str) -> bool:
    """A boolean; null means false."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _wrong(field, "a boolean", value)
    return value


def require_list(value: object, field: str) -> list[Any]:
    """An array."""
    if not isinstance(value, list):
        raise _wrong(field, "an array", value)
    return value


def optional_str_list(value: object, field: str) -> list[str] | None:
    """An array of strings; null and empty mean absent."""
    if value is None:
        return None
    items = require_list(value, field)
    for item in items:
        if not isinstance(item, str):
            raise _wrong(f"{field}[]", "a string", item)
    return items or None


def optional_headers(value: object, field: str) -> dict[str, str] | None:
    """A string-to-string map; null and empty mean absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _wrong(field, "an object of strings", value)
    for key, item in value.items():
        if not isinstance(key, str):
            raise _wrong(f"{field} key", "a string", key)
        if not isinstance(item, str):
            raise _wrong(f"{field}[{key!r}]", "a string", item)
    return value or None
