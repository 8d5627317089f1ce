"""Migration 0019 on facts kept from before it, on both backends: the page-view and item sums of each
day not rolled up are built from its facts (a rolled day gets none: it is read from daily rows),
the item's author left out when read; then migration 0023 moves the anonymous uniques' rows into one
row per visitor-day (`visitor_sums`)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import text

from tests.storing import assert_sums_match_facts
from trackside.storage.day_sums import read
from trackside.storage.engine import create_engine
from trackside.storage.item_sums import read_item
from trackside.storage.migrate import migrate
from trackside.storage.visitor_sums import decode

D = date(2026, 11, 10)
ROLLED = date(2026, 11, 9)


def view(i: int, visitor: str, label: str, user: str | None, day: date = D, country: str | None = "DE") -> dict:
    return {"day": day, "id": f"pv{i}", "ts": datetime(day.year, day.month, day.day, 9 + i % 2, i), "hour": 9 + i % 2,
            "visitor": visitor, "who": f"u:{user}" if user else f"v:{visitor}", "user_id": user, "visit_id": "x",
            "label": label, "path": label, "device": "desktop", "browser": "Firefox", "os": "Linux",
            "country": country}  # fmt: skip


async def test_upgrade_builds_the_sums_of_days_not_rolled_up(database_url):
    await migrate(database_url, "0018_journeys_retention")
    rows = [
        view(1, "a", "/", None), view(2, "a", "/p/[post]", None), view(3, "b", "/", "u1"),
        view(4, "c", "/", "u1", country=None), view(5, "d", "/about", None), view(6, "e", "/", None, ROLLED),
    ]  # fmt: skip
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO fact_page_views (day, id, ts, hour, visitor, who, user_id, visit_id, label, path, "
                    "device, browser, os, country) VALUES (:day, :id, :ts, :hour, :visitor, :who, :user_id, "
                    ":visit_id, :label, :path, :device, :browser, :os, :country)"
                ),
                rows,
            )
            # Looks of artwork 7 (u1 is its author: their look is no view) and an impression.
            looks = [("l1", "a", None, "view"), ("l2", "b", "u1", "view"), ("l3", "e", "u2", "player")]
            await conn.execute(
                text(
                    "INSERT INTO fact_looks (day, id, ts, hour, visitor, who, user_id, content_kind, content_id, "
                    "view_type, device, country) VALUES (:day, :id, :ts, 9, :visitor, :who, :user, 'artwork', '7', "
                    ":type, 'desktop', 'DE')"
                ),
                [
                    {
                        "day": D,
                        "id": i,
                        "ts": datetime(2026, 11, 10, 9, n),
                        "visitor": v,
                        "who": f"u:{u}" if u else f"v:{v}",
                        "user": u,
                        "type": t,
                    }
                    for n, (i, v, u, t) in enumerate(looks)
                ],  # fmt: skip
            )
            await conn.execute(
                text(
                    "INSERT INTO fact_impressions (day, id, ts, hour, visitor, who, user_id, content_kind, content_id, "
                    "view_type) VALUES (:day, 'i1', :ts, 11, 'a', 'v:a', NULL, 'artwork', '7', 'feed')"
                ),
                {"day": D, "ts": datetime(2026, 11, 10, 11, 0)},
            )
            await conn.execute(
                text("INSERT INTO item_authors (content_kind, content_id, author_id) VALUES ('artwork', '7', 'u1')")
            )
            await conn.execute(
                text("INSERT INTO rollup_days (day, dirty, rolled_at) VALUES (:day, :dirty, :at)"),
                {"day": ROLLED, "dirty": False, "at": datetime(2026, 11, 10, 0, 5)},
            )
        await migrate(database_url)
        assert await assert_sums_match_facts(engine, counted=False) == 1  # D only
        async with engine.connect() as conn:
            kept = await read(conn, D, with_users=True)
            assert await read(conn, ROLLED, with_users=True) is None
            _, item = await read_item(conn, D, "artwork", "7")
            # Migration 0023 moved the anonymous uniques into one row per visitor-day.
            both = "SELECT who FROM fact_sum_who UNION SELECT who FROM item_sum_who"
            whos = {w for (w,) in await conn.execute(text(both))}
            visitors = {
                v: decode(c) for v, c in await conn.execute(text("SELECT visitor, counts FROM fact_sum_visitors"))
            }
    finally:
        await engine.dispose()
    assert kept is not None
    sums, users = kept
    assert users == {"u1"}
    assert whos == {"u:u1", "u:u2"}
    assert sorted(visitors) == ["a", "d"]  # e's view is of the rolled day; b and c are u1's
    assert visitors["a"] == {
        **{("p", "", ""): 2, ("p", "label", "/"): 1, ("p", "label", "/p/[post]"): 1, ("p", "country", "DE"): 2},
        **{("p", dim, value): 2 for dim, value in (("device", "desktop"), ("browser", "Firefox"), ("os", "Linux"))},
        ("p", "hour", "09"): 1, ("p", "hour", "10"): 1, ("i", "artwork", "7"): 1,
    }  # fmt: skip
    # [page views, signed in, uniques ("u:u1" once for two visitors), signed-in uniques]
    assert sums[("", "")] == [5, 2, 3, 1]
    assert sums[("label", "/")] == [3, 2, 2, 1]
    assert sums[("label", "/p/[post]")] == [1, 0, 1, 0]
    assert sums[("country", "DE")] == [4, 1, 3, 1]
    assert sums[("hour", "09")] == [2, 1, 2, 1]  # pv2, pv4
    assert sums[("hour", "10")] == [3, 1, 3, 1]  # pv1, pv3, pv5
    assert ("country", "") not in sums
    assert item is not None
    assert (item.counts["views"], item.counts["impressions"], item.viewers, item.viewers_authenticated) == (2, 1, 2, 1)
    assert item.users == {"u2"}
    assert item.dims[("type", "view")] == [1, 0] and item.dims[("type", "player")] == [1, 1]
    assert item.dims[("type", "feed")] == [1, 0] and item.dims[("impression_hour", "11")] == [1, 0]
    assert (item.first_at, item.last_at) == (datetime(2026, 11, 10, 9, 0), datetime(2026, 11, 10, 9, 2))
