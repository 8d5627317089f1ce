"""A bounded S3-FIFO cache: strings seen once cannot push out the ones a site sees all day.

An LRU cache puts every new key at the front, so a script sending a few thousand random
User-Agents evicts every real browser's entry and each of its requests is parsed again.
S3-FIFO (Yang et al., SOSP 2023, also what ua-parser 1.x ships) admits new keys to a small
FIFO holding a tenth of the entries; only a key asked for again while there moves to the main
FIFO.  Keys evicted from the small queue are remembered (key only) in a ghost list, so one
that comes back soon goes straight to the main queue.  Memory stays bounded by ``maxsize``
entries plus as many ghost keys.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["S3FifoCache"]

K = TypeVar("K")
V = TypeVar("V")

_MAX_FREQ = 3


class S3FifoCache(Generic[K, V]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 10:
            raise ValueError("maxsize must be at least 10")
        self._small_cap = maxsize // 10
        self._main_cap = maxsize - self._small_cap
        self._small: OrderedDict[K, list] = OrderedDict()  # key -> [value, freq]
        self._main: OrderedDict[K, list] = OrderedDict()
        self._ghost: OrderedDict[K, None] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._small) + len(self._main)

    def get_or_compute(self, key: K, compute: Callable[[K], V]) -> V:
        with self._lock:
            entry = self._small.get(key) or self._main.get(key)
            if entry is not None:
                self.hits += 1
                if entry[1] < _MAX_FREQ:
                    entry[1] += 1
                return entry[0]
            self.misses += 1
        # Computed outside the lock: two threads may both compute a new key, which is harmless.
        value = compute(key)
        with self._lock:
            if key in self._small or key in self._main:
                return value
            if key in self._ghost:
                del self._ghost[key]
                while len(self._main) >= self._main_cap:
                    self._evict_main()
                self._main[key] = [value, 0]
            else:
                while len(self._small) >= self._small_cap:
                    self._evict_small()
                self._small[key] = [value, 0]
        return value

    def _evict_small(self) -> None:
        key, entry = self._small.popitem(last=False)
        if entry[1] > 0:
            # Asked for again while new: a keeper.
            while len(self._main) >= self._main_cap:
                self._evict_main()
            entry[1] = 0
            self._main[key] = entry
        else:
            self._ghost[key] = None
            while len(self._ghost) > self._main_cap:
                self._ghost.popitem(last=False)

    def _evict_main(self) -> None:
        while True:
            key, entry = self._main.popitem(last=False)
            if entry[1] == 0:
                return
            # Used since it was last looked at: another round, one use forgotten.
            entry[1] -= 1
            self._main[key] = entry
