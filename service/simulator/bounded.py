"""Containers that forget their oldest entries: the simulator serves any number of phones and
requests, and must not grow without bound."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

MAX_PHONES = 10_000  # phones whose messages, calls and pushes are kept
MAX_REFERENCES = 100_000  # enough to de-duplicate any retry of the service


class RecentMap(Generic[K, V]):
    """A mapping that keeps its `limit` most recently used keys; `setdefault` makes missing values."""

    def __init__(self, make: Callable[[], V], limit: int = MAX_PHONES) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._make = make
        self._limit = limit

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def setdefault(self, key: K) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = self._make()
        if len(self._items) > self._limit:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


class RecentSet(Generic[K]):
    """A set of the `limit` most recently added members."""

    def __init__(self, limit: int = MAX_REFERENCES) -> None:
        self._items: OrderedDict[K, None] = OrderedDict()
        self._limit = limit

    def add(self, member: K) -> bool:
        """Add `member`; False when it was already there."""
        if member in self._items:
            return False
        self._items[member] = None
        if len(self._items) > self._limit:
            self._items.popitem(last=False)
        return True

    def __contains__(self, member: object) -> bool:
        return member in self._items

    def __len__(self) -> int:
        return len(self._items)
