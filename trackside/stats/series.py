"""Shapes shared by the stats responses: top-N maps, zero-filled daily and hourly series."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta


def top(counter: Mapping[str, int], limit: int | None = None) -> dict[str, int]:
    ranked = sorted(((k, v) for k, v in counter.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return dict(ranked[:limit] if limit else ranked)


def day_range(last: date, count: int) -> list[date]:
    return [last - timedelta(days=count - 1 - i) for i in range(count)]


def hour_starts(now: datetime, count: int = 24) -> list[datetime]:
    """The starts of the last `count` UTC hours, the current one last."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=count - 1 - i) for i in range(count)]


def hour_label(start: datetime) -> str:
    return start.strftime("%Y-%m-%dT%H:00:00+00:00")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def counter() -> Counter[str]:
    return Counter()
