"""Migration 0020 on facts kept from before it, on both backends: the days already rolled (and clean) get their
journeys' daily rows (`journey_days`) from their page view facts; a dirty day, or one never rolled, none (the
rollup writes them)."""

from __future__ import annotations

import importlib
from datetime import date, datetime, timedelta

from sqlalchemy import text

from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate

D = date(2026, 11, 10)
BEFORE = importlib.import_module("trackside.migrations.versions.0020_journey_days").down_revision


def view(i: int, visit: str, label: str, prev: str | None, nxt: str | None, day: date = D) -> dict:
    return {"day": day, "id": f"pv{i}", "ts": datetime(day.year, day.month, day.day, 10, i), "hour": 10,
            "visitor": "v", "who": "v:v", "visit_id": visit, "label": label, "path": label, "device": "desktop",
            "browser": "Firefox", "os": "Linux", "prev_label": prev, "next_label": nxt}  # fmt: skip


async def test_upgrade_fills_rolled_days(database_url):
    await migrate(database_url, BEFORE)
    dirty_day, unrolled_day = D + timedelta(days=1), D + timedelta(days=2)
    rows = [
        view(1, "a", "/", None, "/p/[post]"), view(2, "a", "/p/[post]", "/", "/"), view(3, "a", "/", "/p/[post]", None),
        view(4, "b", "/", None, None),
        view(5, "c", "/", None, None, dirty_day), view(6, "d", "/", None, None, unrolled_day),
    ]  # fmt: skip
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO fact_page_views (day, id, ts, hour, visitor, who, visit_id, label, path, device, "
                    "browser, os, prev_label, next_label) VALUES (:day, :id, :ts, :hour, :visitor, :who, :visit_id, "
                    ":label, :path, :device, :browser, :os, :prev_label, :next_label)"
                ),
                rows,
            )
            await conn.execute(
                text("INSERT INTO rollup_days (day, dirty, rolled_at, events) VALUES (:day, :dirty, :at, 0)"),
                [{"day": D, "dirty": False, "at": datetime(2026, 11, 11)},
                 {"day": dirty_day, "dirty": True, "at": datetime(2026, 11, 12)}],
            )  # fmt: skip
        await migrate(database_url)
        async with engine.connect() as conn:
            got = (
                await conn.execute(
                    text("SELECT day, label, side, neighbour, passages, visits FROM journey_days "
                         "ORDER BY day, label, side, neighbour")
                )
            ).all()  # fmt: skip
    finally:
        await engine.dispose()
    assert [(str(r[0])[:10], *r[1:]) for r in got] == [
        ("2026-11-10", "/", "next", "", 2, 2), ("2026-11-10", "/", "next", "/p/[post]", 1, 1),
        ("2026-11-10", "/", "page", "", 3, 2),
        ("2026-11-10", "/", "prev", "", 2, 2), ("2026-11-10", "/", "prev", "/p/[post]", 1, 1),
        ("2026-11-10", "/p/[post]", "next", "/", 1, 1), ("2026-11-10", "/p/[post]", "page", "", 1, 1),
        ("2026-11-10", "/p/[post]", "prev", "/", 1, 1),
    ]  # fmt: skip
