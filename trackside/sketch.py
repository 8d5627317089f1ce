"""Mergeable distinct counts of signed-in users: HyperLogLog (Apache DataSketches).

A day's exact set of user ids is stored beside its rows as a sketch; any range of days merges its
sketches, so distinct users over 7 or 30 days are estimated (relative standard error about 1.6%
at lg_k=12, exact for small sets), never summed."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

LG_K = 12
# Two standard errors of the estimate at LG_K = 12 (RSE = 1.04 / sqrt(2^12) = 1.625%).
RELATIVE_ERROR_BOUND = 2 * 1.04 / (2 ** (LG_K / 2))


# Imported with this module, not on first use: the first sitewide or item read of a process paid its
# import (175-230 ms, most of a cold read's budget), and NumPy, the bulk of it, is loaded at start-up
# anyway (the funnels' matcher): DataSketches itself adds about 2 MB and 50 ms.
_DATASKETCHES = importlib.import_module("datasketches")


def _lib() -> Any:
    return _DATASKETCHES


class Sketch:
    """A sketch filled a part at a time (users streamed from the database, never all in memory)."""

    def __init__(self) -> None:
        self._sketch = _lib().hll_sketch(LG_K)
        self._empty = True

    def add(self, users: Iterable[str]) -> None:
        for user in users:
            self._sketch.update(user)
            self._empty = False

    def serialized(self) -> bytes | None:
        return None if self._empty else self._sketch.serialize_compact()


def sketch_of(users: Iterable[str]) -> bytes | None:
    sketch = Sketch()
    sketch.add(users)
    return sketch.serialized()


class DistinctUsers:
    """Merges exact sets (days not rolled up yet) and stored sketches (days rolled up)."""

    def __init__(self) -> None:
        self._union: Any = None  # made with the first sketch: most items of a range never have one
        self._exact: set[str] = set()

    def add_users(self, users: Iterable[str]) -> None:
        self._exact.update(users)

    def add_sketch(self, blob: bytes | None) -> None:
        if blob:
            if self._union is None:
                self._union = _lib().hll_union(LG_K)
            self._union.update(_lib().hll_sketch.deserialize(blob))

    def estimate(self) -> int:
        if self._union is None:
            return len(self._exact)  # nothing rolled up: the exact answer
        if self._exact:
            sketch = _lib().hll_sketch(LG_K)
            for user in self._exact:
                sketch.update(user)
            self._union.update(sketch)
        return round(self._union.get_result().get_estimate())
