"""Stores built on first use, and built again when the settings they are made from change.

Every delivery store (history, memberships, pending acks) is chosen and configured from
``CONDUIT_RT`` (Redis or memory, URL, key prefix, limits). Settings are never read at import time,
and ``override_settings`` in tests must take effect, so each store is built lazily and keyed by
the settings it depends on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class BuiltOnUse(Generic[T]):
    """``store()`` builds the store with ``build`` on first call and whenever ``key()`` changes."""

    def __init__(self, key: Callable[[], Hashable], build: Callable[[], T]) -> None:
        self._key = key
        self._build = build
        self._lock = threading.Lock()
        self._built: tuple[Hashable, T] | None = None
        self._swapped: T | None = None

    def __call__(self) -> T:
        swapped = self._swapped
        if swapped is not None:
            return swapped
        key = self._key()
        with self._lock:
            if self._built is None or self._built[0] != key:
                self._built = (key, self._build())
            return self._built[1]

    def swap(self, store: T) -> None:
        """Use ``store`` until the next ``reset``, whatever the settings (tests; through
        ``hubs.runtime.runtime().swap_store``)."""
        with self._lock:
            self._swapped = store

    def reset(self) -> None:
        """Forget the store: the next call builds a fresh one (``hubs.runtime`` calls it)."""
        with self._lock:
            self._built = None
            self._swapped = None
