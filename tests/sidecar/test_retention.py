"""Retention of signed-in users (`GET /_trackside/api/v2/retention`): the rollup writes each closed
day's signed-in users (`user_days`, `user_first_seen`), the grid reads only those, through a real
sidecar, on both backends; the prune keeps them as long as the daily rows.

Weeks are Monday-based UTC weeks, counted back from the week of the last day with a signed-in user
(M0 is that week's Monday, Mk the Monday k weeks before):
- u1: first seen M3 (Tuesday), again M2 (Wednesday, by an API call) and M0: cohort M3, back in weeks 1 and 3;
- u2: M3 (Monday) and M3 (Thursday): cohort M3, never back;
- u3: M2, then M1: cohort M2, back in week 1;
- u4: M1 only; u5: first seen 20 weeks before M0 (before the grid), back at M2: no cohort here;
- an anonymous visitor every one of those days: never in the grid."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from tests.servers import run_sidecar
from tests.sidecar.test_stats import MOD, SECRET, ev
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.rollup import prune, rollup_day, rollup_pending
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import RETENTION_WEEKS, USER_DAYS, USER_FIRST_SEEN

ROUTE = "/_trackside/api/v2/retention"


def _ts(day: date, hour: int = 12) -> float:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()


TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)
M0 = YESTERDAY - timedelta(days=YESTERDAY.weekday())


def monday(k: int) -> date:
    return M0 - timedelta(weeks=k)


ACTIVE = [
    ("u1", monday(3) + timedelta(days=1)),
    ("u1", monday(2) + timedelta(days=2)),
    ("u1", M0),
    ("u2", monday(3)),
    ("u2", monday(3) + timedelta(days=3)),
    ("u3", monday(2)),
    ("u3", monday(1)),
    ("u4", monday(1) + timedelta(days=4)),
    ("u5", monday(20)),
    ("u5", monday(2) + timedelta(days=1)),
]


@pytest.fixture
async def site(upstream_url, make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, database_url=database_url,
        trust_roles_claim=True,
    )  # fmt: skip
    events = []
    for i, (user, day) in enumerate(ACTIVE):
        if user == "u1" and day == monday(2) + timedelta(days=2):
            events.append(ev(_ts(day), f"v{i}", path="/api/p/a1", kind="api_call", nav="api", user_id=user))
        else:
            events.append(ev(_ts(day), f"v{i}", path="/", user_id=user))
        events.append(ev(_ts(day, 13), f"anon{i}", path="/"))
    engine = create_engine(database_url)
    await write_batch(engine, Batch(events=events), derivation_of(settings))
    await rollup_pending(engine, 1800.0, today=TODAY)
    yield settings, engine
    await engine.dispose()


async def stored(engine) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    async with engine.connect() as conn:
        days = [
            (u, str(d)[:10])
            for d, u in await conn.execute(select(USER_DAYS).order_by(USER_DAYS.c.day, USER_DAYS.c.user_id))
        ]
        first = [
            (u, str(f)[:10], str(last)[:10])
            for u, f, last in await conn.execute(select(USER_FIRST_SEEN).order_by(USER_FIRST_SEEN.c.user_id))
        ]
    return days, first


async def test_weekly_cohort_grid(site):
    settings, engine = site
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            r = await c.get(ROUTE, params={"weeks": "4"})
            bad = await c.get(ROUTE, params={"weeks": "53"})
        async with httpx.AsyncClient(base_url=url) as c:
            nobody = await c.get(ROUTE)
    assert r.status_code == 200, r.text
    grid = r.json()
    assert grid["weeks"] == 4 and grid["through"] == M0.isoformat()
    assert grid["partial_week"] == (None if M0.weekday() == 6 else M0.isoformat())
    assert [(c["week"], c["users"], c["retained"], c["shares"]) for c in grid["cohorts"]] == [
        (monday(4).isoformat(), 0, [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0]),
        (monday(3).isoformat(), 2, [1, 0, 1, None], [50.0, 0.0, 50.0, None]),
        (monday(2).isoformat(), 1, [1, 0, None, None], [100.0, 0.0, None, None]),
        (monday(1).isoformat(), 1, [0, None, None, None], [0.0, None, None, None]),
        (M0.isoformat(), 0, [None, None, None, None], [None, None, None, None]),
    ]
    assert "salted anew every UTC day" in grid["meta"]["anonymous"]
    assert bad.status_code == 400 and bad.json() == {"error": "weeks is a whole number from 1 to 52"}
    assert nobody.status_code == 401


async def test_rows_are_user_ids_only_rerun_safe_and_pruned_with_the_daily_rows(site):
    settings, engine = site
    days, first = await stored(engine)
    assert days == sorted(((u, d.isoformat()) for u, d in ACTIVE), key=lambda p: (p[1], p[0]))
    assert first == [
        ("u1", (monday(3) + timedelta(days=1)).isoformat(), M0.isoformat()),
        ("u2", monday(3).isoformat(), (monday(3) + timedelta(days=3)).isoformat()),
        ("u3", monday(2).isoformat(), monday(1).isoformat()),
        ("u4", (monday(1) + timedelta(days=4)).isoformat(), (monday(1) + timedelta(days=4)).isoformat()),
        ("u5", monday(20).isoformat(), (monday(2) + timedelta(days=1)).isoformat()),
    ]
    # A day rolled again replaces its rows: the same rows.
    await rollup_day(engine, monday(3), 1800.0, force=True)
    assert await stored(engine) == (days, first)
    # Daily rows kept back to M2: older active days go, and so does the user last seen before then (u2).
    keep = (TODAY - monday(2)).days
    await prune(engine, raw_retention_days=7, daily_retention_days=keep, today=TODAY, fact_retention_days=90)
    before = TODAY - timedelta(days=keep)
    days_after, first_after = await stored(engine)
    assert days_after == [p for p in days if p[1] >= before.isoformat()]
    assert first_after == [f for f in first if f[2] >= before.isoformat()]
    assert [u for u, _, _ in first_after] == ["u1", "u3", "u4", "u5"]
    assert len(days_after) == len(days) - 4
    async with engine.connect() as conn:
        weeks = sorted(str(w)[:10] for (w,) in await conn.execute(select(RETENTION_WEEKS.c.active_week).distinct()))
    # The grid's cells of weeks that ended before then go too (M3's week ended before M2).
    assert weeks == [monday(2).isoformat(), monday(1).isoformat(), M0.isoformat()]


async def test_a_day_rolled_late_moves_a_user_to_an_earlier_cohort(site):
    settings, engine = site
    # u4 turns out to have been signed in at M2 already (a late event; its day is rolled again).
    late = ev(_ts(monday(2) + timedelta(days=3)), "late", path="/", user_id="u4")
    await write_batch(engine, Batch(events=[late]), derivation_of(settings))
    rolled = await rollup_pending(engine, 1800.0, today=TODAY)
    assert [r.day for r in rolled] == [monday(2) + timedelta(days=3)]
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            grid = (await c.get(ROUTE, params={"weeks": "4"})).json()
    assert [(c["week"], c["users"], c["retained"]) for c in grid["cohorts"]] == [
        (monday(4).isoformat(), 0, [0, 0, 0, 0]),
        (monday(3).isoformat(), 2, [1, 0, 1, None]),
        (monday(2).isoformat(), 2, [2, 0, None, None]),
        (monday(1).isoformat(), 0, [0, None, None, None]),
        (M0.isoformat(), 0, [None, None, None, None]),
    ]
