"""Bound on the nesting depth of decoded records."""

from __future__ import annotations

from .errors import InvalidMessageError

MAX_DEPTH = 64


def check_depth(value: object, max_depth: int = MAX_DEPTH) -> None:
    """Raise InvalidMessageError if arrays/objects nest deeper than ``max_depth``.

    The record itself counts as level 1. The walk is iterative, so it cannot overflow.
    """
    if not isinstance(value, list | dict):
        return
    stack: list[tuple[list[object] | dict[object, object], int]] = [(value, 1)]
    while stack:
        container, level = stack.pop()
        if level > max_depth:
            raise InvalidMessageError(f"Message nesting exceeds the maximum depth of {max_depth} levels.")
        children = container.values() if isinstance(container, dict) else container
        for child in children:
            if isinstance(child, list | dict):
                stack.append((child, level + 1))
