"""The stats caches: answers (Redis in scale-out mode, in process in embedded mode), and the figures
of closed days (in process).

An answer's key carries the state of the closed days it covers (`closed_state`): which days in its
range are rolled up and clean, when each was rolled and how many events it holds. A rollup, a day
made dirty by a late event, or a late event added to a pruned day all change the key, in every
process, without anyone sending a message. An answer of closed days alone is kept
`stats_cache_seconds`; one that includes a day read from stored events (today, or a day not rolled
yet) at most `TODAY_SECONDS`, so a stored event is in every figure within that."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from datetime import date, datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.figures import DayFigures, ItemFigures, load_days, rolled_item_totals
from trackside.storage.tables import ROLLUP_DAYS

REFRESH_INTERVAL_SECONDS = 10.0
# The longest an answer that includes today (or another day not rolled up) is served from the cache.
TODAY_SECONDS = 5.0

# A closed day's state: when it was rolled and how many events it holds (a late event added to a
# pruned day changes the count, never `rolled_at`).
DayState = tuple[datetime, int]
# Item totals of closed days (a content ranking's month: one entry per item) kept at once.
TOTALS_KEPT = 8

K = TypeVar("K")
V = TypeVar("V")


class StatsCache(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...

    async def allow_refresh(self, caller: str) -> bool: ...


class MemoryCache:
    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self._entries: dict[str, tuple[float, str]] = {}
        self._refreshes: dict[str, float] = {}

    async def get(self, key: str) -> str | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    async def set(self, key: str, value: str, ttl: float) -> None:
        if len(self._entries) >= self.capacity:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= self.capacity:
                self._entries.clear()
        self._entries[key] = (time.monotonic() + ttl, value)

    async def allow_refresh(self, caller: str) -> bool:
        now = time.monotonic()
        if self._refreshes.get(caller, 0.0) > now:
            return False
        if len(self._refreshes) > 10_000:
            self._refreshes.clear()
        self._refreshes[caller] = now + REFRESH_INTERVAL_SECONDS
        return True


class RedisCache:
    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self.prefix = prefix

    async def get(self, key: str) -> str | None:
        try:
            value = await self.redis.get(self.prefix + key)
        except Exception:  # a cache that is down is a miss, never an error
            return None
        return value.decode() if value is not None else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        try:
            await self.redis.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except Exception:
            pass

    async def allow_refresh(self, caller: str) -> bool:
        try:
            return bool(await self.redis.set(self.prefix + "refresh:" + caller, b"1", nx=True, ex=10))
        except Exception:
            return True

    async def close(self) -> None:
        await self.redis.aclose()


async def closed_state(conn: AsyncConnection, first: date, last: date) -> dict[date, DayState]:
    """The days of [first, last] whose daily rows are complete (rolled and clean), with their state."""
    c = ROLLUP_DAYS.c
    rows = await conn.execute(
        select(c.day, c.rolled_at, c.events).where(
            c.day >= first, c.day <= last, c.dirty.is_(False), c.rolled_at.is_not(None)
        )
    )
    return {day: (rolled_at, int(events)) for day, rolled_at, events in rows}


def state_key(state: dict[date, DayState]) -> str:
    """A short digest of `closed_state`: equal exactly when the closed days read the same."""
    text = ";".join(f"{d.isoformat()}={r.isoformat()}/{n}" for d, (r, n) in sorted(state.items()))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


def all_closed(state: dict[date, DayState], first: date, last: date) -> bool:
    """Whether every day of [first, last] is read from daily rows (no day from stored events)."""
    return sum(1 for day in state if first <= day <= last) == (last - first).days + 1


class ClosedDays:
    """Closed days' figures, without their items, kept in this process until their state changes:
    so an answer recomputed every few seconds for today reads only today (and any day not rolled
    up), not the month before it again. Days with items (a month of items is large) are never kept;
    nor are days read from stored events. Bounded: the least recently used go first."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._days: OrderedDict[tuple[date, DayState], DayFigures] = OrderedDict()
        self._totals: OrderedDict[str, dict[tuple[str, str], ItemFigures]] = OrderedDict()

    async def load(
        self,
        conn: AsyncConnection,
        first: date,
        last: date,
        window_seconds: float,
        state: dict[date, DayState],
        *,
        with_items: bool = True,
        rolled_items: bool | None = None,
        looks: bool = True,
    ) -> list[DayFigures]:
        """As `load_days` (the same arguments; `state` is `closed_state` of the range, read in the
        same snapshot), with the closed days from this cache when it has them."""
        if with_items if rolled_items is None else rolled_items:
            return await load_days(
                conn, first, last, window_seconds, with_items=with_items, rolled_items=rolled_items, looks=looks
            )
        found: dict[date, DayFigures] = {}
        for day, day_state in state.items():
            hit = self._days.get((day, day_state))
            if hit is not None:
                self._days.move_to_end((day, day_state))
                found[day] = hit
        out: list[DayFigures] = []
        day = first
        while day <= last:
            if day in found:
                out.append(found[day])
                day += timedelta(days=1)
                continue
            # A run of days not in the cache, read together.
            end = day
            while end + timedelta(days=1) <= last and end + timedelta(days=1) not in found:
                end += timedelta(days=1)
            for figures in await load_days(
                conn, day, end, window_seconds, with_items=with_items, rolled_items=rolled_items, looks=looks
            ):
                out.append(figures)
                if figures.rolled and figures.day in state:
                    _keep(self._days, (figures.day, state[figures.day]), figures, self.capacity)
            day = end + timedelta(days=1)
        return out

    async def item_totals(
        self, conn: AsyncConnection, days: list[date], state: dict[date, DayState]
    ) -> dict[tuple[str, str], ItemFigures]:
        """`rolled_item_totals` of these closed days, kept while their state holds."""
        key = state_key({d: state[d] for d in days if d in state}) + f":{len(days)}"
        hit = self._totals.get(key)
        if hit is not None:
            self._totals.move_to_end(key)
            return hit
        totals = await rolled_item_totals(conn, days)
        if all(d in state for d in days):
            _keep(self._totals, key, totals, TOTALS_KEPT)
        return totals


def _keep(store: OrderedDict[K, V], key: K, value: V, capacity: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > capacity:
        store.popitem(last=False)
