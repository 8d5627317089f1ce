"""Migration 0018 on facts kept from before it, on both backends: each page view gets the route labels of its
neighbours in its visit (journeys), and the signed-in users of the kept facts their active days, first days and
the retention grid's cells."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import text

from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate

D = date(2026, 11, 10)  # a Tuesday: its week's Monday is 2026-11-09


def view(i: int, visit: str, label: str, user: str | None, day: date = D) -> dict:
    return {"day": day, "id": f"pv{i}", "ts": datetime(day.year, day.month, day.day, 10, i), "hour": 10,
            "visitor": "v", "who": f"u:{user}" if user else "v:v", "user_id": user, "visit_id": visit,
            "label": label, "path": label, "device": "desktop", "browser": "Firefox", "os": "Linux"}  # fmt: skip


async def test_upgrade_fills_neighbours_and_user_days(database_url):
    await migrate(database_url, "0017_funnels")
    rows = [
        view(1, "a", "/", None), view(2, "a", "/p/[post]", None), view(3, "a", "/about", None),
        view(4, "b", "/about", "u1"), view(5, "c", "/", "u1", date(2026, 11, 17)),
    ]  # fmt: skip
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO fact_page_views (day, id, ts, hour, visitor, who, user_id, visit_id, label, path, "
                    "device, browser, os) VALUES (:day, :id, :ts, :hour, :visitor, :who, :user_id, :visit_id, :label, "
                    ":path, :device, :browser, :os)"
                ),
                rows,
            )
        await migrate(database_url)
        async with engine.connect() as conn:
            got = (await conn.execute(text("SELECT id, prev_label, next_label FROM fact_page_views ORDER BY id"))).all()
            days = (await conn.execute(text("SELECT day, user_id FROM user_days ORDER BY day"))).all()
            first = (await conn.execute(text("SELECT user_id, first_day, last_day FROM user_first_seen"))).all()
            cells = (
                await conn.execute(text("SELECT cohort_week, active_week, users FROM retention_weeks ORDER BY 2"))
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in got] == [
        ("pv1", None, "/p/[post]"),
        ("pv2", "/", "/about"),
        ("pv3", "/p/[post]", None),
        ("pv4", None, None),
        ("pv5", None, None),
    ]
    assert [(str(d)[:10], u) for d, u in days] == [("2026-11-10", "u1"), ("2026-11-17", "u1")]
    assert [(u, str(f)[:10], str(last)[:10]) for u, f, last in first] == [("u1", "2026-11-10", "2026-11-17")]
    assert [(str(c)[:10], str(a)[:10], n) for c, a, n in cells] == [
        ("2026-11-09", "2026-11-09", 1),
        ("2026-11-09", "2026-11-16", 1),
    ]
