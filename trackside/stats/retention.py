"""Retention of signed-in users: a weekly cohort grid, read from `retention_weeks` alone (its cells,
counted by the rollup of each closed day from `user_days` and `user_first_seen`:
`trackside.storage.user_days`), so it reaches past the facts' retention and reads a few hundred rows.

A user's cohort is the UTC week (Monday to Sunday) of its first signed-in request; it is retained in
week W+k when it made a signed-in request that week. Weeks run through the last rolled day: the
last week may be partial, and today is not counted until it is rolled."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage.tables import RETENTION_WEEKS, USER_DAYS

MAX_WEEKS = 52
# 1970-01-05 was a Monday: week numbers count Mondays since then.
_MONDAY_ZERO = date(1970, 1, 5)

MEANING = {
    "cohort": "signed-in users whose first signed-in request fell in that UTC week (Monday to Sunday)",
    "retained": "of them, how many made a signed-in request in week W+1, W+2, ... (null: that week has not begun)",
    "shares": "retained as a percentage of the cohort",
    "anonymous": (
        "anonymous visitors are not in this grid, by design: their visitor id is salted anew every UTC "
        "day, so nobody (Trackside included) can tell that two days' visitors are one person"
    ),
    "source": (
        "signed-in users' active days (user ids only), written when a day is rolled up and kept as long "
        "as the daily rows; the weeks through the last rolled day (today counts once it is rolled). Days "
        "before the upgrade that added them count as far as the facts then held"
    ),
}


def monday_of(week: int) -> date:
    return _MONDAY_ZERO + timedelta(days=7 * week)


def week_of(day: date) -> int:
    return (day - _MONDAY_ZERO).days // 7


async def retention_grid(conn: AsyncConnection, weeks: int, today: date) -> dict[str, Any]:
    """The cohorts of the last `weeks` + 1 weeks through the last rolled day, each with its share
    retained in each of the `weeks` weeks after its own."""
    last = (await conn.execute(sa.select(sa.func.max(USER_DAYS.c.day)))).scalar()
    through = _as_date(last) if last is not None else today - timedelta(days=1)
    newest = week_of(through)
    oldest = newest - weeks
    start = monday_of(oldest)
    cells = RETENTION_WEEKS.c
    query = sa.select(cells.cohort_week, cells.active_week, cells.users).where(
        cells.cohort_week >= start, cells.active_week <= monday_of(newest)
    )
    counts: dict[int, dict[int, int]] = defaultdict(dict)
    for cohort, active, users in await conn.execute(query):
        c, a = week_of(_as_date(cohort)), week_of(_as_date(active))
        counts[c][a - c] = int(users)
    cohorts = []
    for week in range(oldest, newest + 1):
        size = counts.get(week, {}).get(0, 0)
        retained: list[int | None] = []
        shares: list[float | None] = []
        for k in range(1, weeks + 1):
            if week + k > newest:
                retained.append(None)
                shares.append(None)
                continue
            n = counts.get(week, {}).get(k, 0)
            retained.append(n)
            shares.append(round(100.0 * n / size, 1) if size else 0.0)
        cohorts.append({"week": monday_of(week).isoformat(), "users": size, "retained": retained, "shares": shares})
    return {
        "weeks": weeks,
        "through": through.isoformat(),
        "partial_week": monday_of(newest).isoformat() if through.weekday() != 6 else None,
        "cohorts": cohorts,
        "meta": MEANING,
    }


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
