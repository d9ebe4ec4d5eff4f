"""A bounded map that forgets what was used least recently: the connector's memory of what it has seen."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """Up to `capacity` entries; reading or writing one makes it the most recently used."""

    def __init__(self, capacity: int) -> None:
        """Hold at most `capacity` entries."""
        self._capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value under `key` (now the most recently used), None if there is none."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: K, value: V) -> None:
        """Keep `value` under `key`, forgetting the least recently used entries beyond capacity."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        """Drop `key`'s entry, if any."""
        self._entries.pop(key, None)
