"""The stats cache: Redis in scale-out mode, in process in embedded mode; five minutes.

Keys carry the generation of the rollups (the latest `rolled_at`), so a fresh rollup invalidates
every entry at once, in every process, without anyone sending a message."""

from __future__ import annotations

import time
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage.tables import ROLLUP_DAYS

REFRESH_INTERVAL_SECONDS = 10.0


class StatsCache(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: int) -> None: ...

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

    async def set(self, key: str, value: str, ttl: int) -> None:
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

    async def set(self, key: str, value: str, ttl: int) -> None:
        try:
            await self.redis.set(self.prefix + key, value, ex=ttl)
        except Exception:
            pass

    async def allow_refresh(self, caller: str) -> bool:
        try:
            return bool(await self.redis.set(self.prefix + "refresh:" + caller, b"1", nx=True, ex=10))
        except Exception:
            return True

    async def close(self) -> None:
        await self.redis.aclose()


async def generation(conn: AsyncConnection) -> str:
    latest = (await conn.execute(select(func.max(ROLLUP_DAYS.c.rolled_at)))).scalar()
    return latest.isoformat() if latest is not None else "none"
