"""The allowlist of client-callable hub methods: the ``@hub_method`` decorator and its registry.

Only methods marked with ``@hub_method`` are reachable from the wire; names that start with an
underscore are refused even when marked. Lookup is case-insensitive, as in ASP.NET Core.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "_conduit_hub_method"


def pascal_case(name: str) -> str:
    """``subscribe_to_task`` → ``SubscribeToTask``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def hub_method(func: F | None = None, *, name: str | None = None) -> Any:
    """Mark a hub method as callable by clients, under ``name`` (default: PascalCase of its name).

    Use bare (``@hub_method``) or with a wire name (``@hub_method(name="Ping")``). An ``async def``
    method is awaited; an ``async def`` generator streams its items to the caller; a plain ``def``
    runs in a worker thread (with database connections handled as Channels does).
    """

    def mark(f: F) -> F:
        setattr(f, _MARK, name or pascal_case(f.__name__))
        return f

    return mark(func) if func is not None else mark


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One client-callable method: how it is named on the wire and how it binds arguments."""

    wire_name: str
    attribute: str
    min_args: int
    max_args: int | None
    streaming: bool
    is_async: bool

    def accepts(self, count: int) -> bool:
        return count >= self.min_args and (self.max_args is None or count <= self.max_args)

    def expected(self) -> str:
        if self.max_args == self.min_args:
            return str(self.min_args)
        if self.max_args is None:
            return f"at least {self.min_args}"
        return f"{self.min_args} to {self.max_args}"


def collect_methods(cls: type) -> dict[str, MethodSpec]:
    """Build the lower-cased wire-name → spec registry of a hub class (at class creation)."""
    registry: dict[str, MethodSpec] = {}
    for klass in reversed(cls.__mro__):
        for attribute, value in vars(klass).items():
            wire_name = getattr(value, _MARK, None)
            if wire_name is None:
                continue
            if attribute.startswith("_"):
                raise TypeError(f"{cls.__name__}.{attribute}: private methods cannot be hub methods.")
            spec = _spec(wire_name, attribute, value)
            key = wire_name.lower()
            existing = registry.get(key)
            if existing is not None and existing.attribute != attribute:
                raise TypeError(
                    f"{cls.__name__}: hub methods {existing.attribute!r} and {attribute!r} both answer "
                    f"to {wire_name!r} (names are case-insensitive, overloads are not allowed)."
                )
            registry[key] = spec
    return registry


def _spec(wire_name: str, attribute: str, func: Callable[..., Any]) -> MethodSpec:
    params = list(inspect.signature(func).parameters.values())[1:]  # drop self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
        raise TypeError(f"Hub method {attribute!r} has required keyword-only parameters.")
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    required = sum(1 for p in positional if p.default is p.empty)
    return MethodSpec(
        wire_name=wire_name,
        attribute=attribute,
        min_args=required,
        max_args=None if varargs else len(positional),
        streaming=inspect.isasyncgenfunction(func),
        is_async=inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func),
    )
