"""How dimension values are spelled in answers: Plausible's device names, its placeholders for a
missing value, country names, and the labels of time buckets."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from trackside.stats.v2.countries import COUNTRY_NAMES

# Facts keep devices lower-case; answers use Plausible's spellings, and Trackside's own for the
# kinds Plausible has no name for (players: pixel-art frames and the like).
DEVICES = {"desktop": "Desktop", "mobile": "Mobile", "tablet": "Tablet", "player": "Player", "other": "Other"}
# What a visit without the value answers (Plausible's words).
DIRECT = "Direct / None"
NOT_SET = "(not set)"


def country_name(code: str) -> str:
    return COUNTRY_NAMES.get(code, code) if code != NOT_SET else NOT_SET


def matching_codes(op: str, values: tuple[str, ...], case_sensitive: bool) -> list[str]:
    """The country codes whose name satisfies a positive operator (is, contains, matches)."""
    names = {**{code: name for code, name in COUNTRY_NAMES.items()}, NOT_SET: NOT_SET}
    return [code for code, name in names.items() if satisfies(name, op, values, case_sensitive)]


def satisfies(text: str, op: str, values: tuple[str, ...], case_sensitive: bool) -> bool:
    if op == "matches":
        flags = 0 if case_sensitive else re.IGNORECASE
        return any(re.search(v, text, flags) for v in values)
    subject = text if case_sensitive else text.lower()
    wanted = values if case_sensitive else tuple(v.lower() for v in values)
    if op == "is":
        return subject in wanted
    return any(v in subject for v in wanted)  # contains


def as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def bucket(grain: str, value: Any, first: date) -> str:
    """A time bucket's label: `2026-12-04 13:00:00` (hour), `2026-12-04` (day, and the first day of a
    week or month, never before the range's first day, as Plausible clamps them)."""
    if grain == "hour":
        day, hour = value
        return f"{as_date(day).isoformat()} {int(hour):02d}:00:00"
    return max(as_date(value), first).isoformat()


def time_labels(grain: str, first: date, last: date, start: datetime | None, end: datetime | None) -> list[str]:
    """Every bucket of the range, in order."""
    if grain == "hour":
        at = start.replace(minute=0, second=0, microsecond=0) if start else datetime.combine(first, datetime.min.time())
        stop = end or datetime.combine(last, datetime.max.time())
        out = []
        while at <= stop:
            out.append(at.strftime("%Y-%m-%d %H:00:00"))
            at += timedelta(hours=1)
        return out
    out = []
    day = first
    while day <= last:
        if grain == "day":
            out.append(day.isoformat())
            day += timedelta(days=1)
        elif grain == "week":
            out.append(day.isoformat())
            day = day - timedelta(days=day.weekday()) + timedelta(days=7)
        else:
            out.append(day.isoformat())
            day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return out
