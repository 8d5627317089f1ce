"""v1 popular ranked by the database (`trackside.storage.popular`) answers exactly what the days' figures summed
in Python answer (`popular_rank` and `popular_finish` over `_ranked_days`, the path before it), on both backends:
a seeded random site of six days (four rolled up, yesterday and today not: from their item sums, or from their
facts once the sums are gone), two kinds, signed-in viewers on several days (sketches merged with exact sets),
authors (their own looks are no views), impressions, and ties on views at the limit."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from sidecar.api_routes import _ranked_days
from tests.sidecar.test_stats import ev, midnight
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.figures import derive_pending, rolled_item_sketches
from trackside.rollup import rollup_day
from trackside.stats.cache import ClosedDays
from trackside.stats.query import popular_finish, popular_rank
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.popular import popular
from trackside.storage.writes import write_batch

DAYS = 6  # 5 days ago .. today
ROLLED = (5, 4, 3, 2)  # days ago


def site_events(seed: int = 13) -> list:
    rng = random.Random(seed)
    artworks = [f"a{n}" for n in range(24)]
    posts = [f"b{n}" for n in range(6)]
    authors = {"a0": "u1", "a3": "u2", "b1": "u3"}  # u1..u3 also look at others' items
    users = [f"u{n}" for n in range(12)]
    out = []
    for ago in range(DAYS - 1, -1, -1):
        start = midnight(ago)
        latest = min(86_000.0, datetime.now(UTC).timestamp() - start - 60) if ago == 0 else 86_000.0
        for _ in range(160):
            ts = start + rng.uniform(0, max(latest, 10.0))
            visitor = f"v{rng.randrange(40)}"
            user = rng.choice(users) if rng.random() < 0.4 else None
            # Skewed: a few items take most looks, many share one or two (ties).
            if rng.random() < 0.8:
                item = artworks[min(int(rng.expovariate(0.25)), len(artworks) - 1)]
                path = f"/p/{item}"
            else:
                item = rng.choice(posts)
                path = f"/b/{item}"
            extra = {"user_id": user, "country": rng.choice(["GB", "NL", "DE"])}
            if item in authors and rng.random() < 0.5:
                extra["author_id"] = authors[item]
            if rng.random() < 0.25:
                extra.update(kind="impression", nav="beacon", view_type="listing")
            out.append(ev(ts, visitor, path=path, **extra))
        # The author looking at their own item: never a view.
        out.append(ev(start + 50, "v99", path="/p/a0", user_id="u1", author_id="u1"))
    return out


def day(ago: int) -> date:
    return datetime.now(UTC).date() - timedelta(days=ago)


@pytest.fixture
async def site(make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(database_url=database_url)
    engine = create_engine(database_url)
    derivation = derivation_of(settings)
    await write_batch(engine, Batch(events=site_events()), derivation)
    async with engine.connect() as conn:
        await derive_pending(conn, day(DAYS - 1), day(0), derivation)
    for ago in ROLLED:
        await rollup_day(engine, day(ago), derivation.window_seconds, derivation=derivation)
    yield engine, derivation
    await engine.dispose()


async def before(conn, kind: str, first: date, last: date, limit: int, window: float) -> list[dict]:
    """The popular answer's path before: every item of the range into Python."""
    days, totals, rolled = await _ranked_days(conn, first, last, window, ClosedDays())
    everything = [*days, totals]
    candidates = popular_rank(everything, kind, limit)
    sketches = await rolled_item_sketches(conn, rolled, [(kind, r["id"]) for r in candidates])
    return popular_finish(candidates, everything, kind, limit, sketches)


RANGES = [(5, 0), (5, 2), (3, 1), (1, 0), (0, 0), (2, 2)]  # days ago: mixed, rolled only, not rolled only
LIMITS = (1, 2, 3, 5, 8, 9, 10, 12, 16, 17, 18, 100)


async def compare(engine, window: float) -> dict:
    answers = {}
    async with engine.connect() as conn:
        for kind in ("artwork", "blog_post"):
            for first, last in RANGES:
                for limit in LIMITS:
                    old = await before(conn, kind, day(first), day(last), limit, window)
                    new, _ = await popular(conn, kind, day(first), day(last), limit)
                    assert new == old, (kind, first, last, limit)
                    answers[(kind, first, last, limit)] = new
    return answers


async def test_ranked_by_the_database_as_summed_in_python(site):
    engine, derivation = site
    answers = await compare(engine, derivation.window_seconds)
    top = answers[("artwork", 5, 0, 100)]
    # The data reaches what the test is for: signed-in viewers over rolled and live days, ties on views.
    assert len(top) > 10 and top[0]["views"] > top[-1]["views"]
    assert any(top[n - 1]["views"] == top[n]["views"] for n in LIMITS if n < len(top))  # a tie cut by a limit
    assert all(r["unique_viewers"] <= r["views"] for r in top)
    assert answers[("artwork", 5, 0, 3)] == top[:3]
    assert answers[("blog_post", 0, 0, 100)]
    # Today read: its time; an empty limit, nothing; rolled days only: no time of today.
    async with engine.connect() as conn:
        assert (await popular(conn, "artwork", day(0), day(0), 0)) == ([], None)
        _, as_of = await popular(conn, "artwork", day(0), day(0), 3)
        assert as_of is not None
        assert (await popular(conn, "artwork", day(5), day(2), 3))[1] is None
    # Without yesterday's sums, yesterday is read from its facts: the same answers.
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM fact_sum_days WHERE day = :d"), {"d": day(1)})
    assert await compare(engine, derivation.window_seconds) == answers


async def test_exact_figures_on_a_small_site(make_settings, database_url):
    """Exact values: two rolled days and today; a tie on views ordered by viewers, then by id."""
    await migrate(database_url)
    settings = make_settings(database_url=database_url)
    engine = create_engine(database_url)
    derivation = derivation_of(settings)
    d2, d1, d0 = midnight(2), midnight(1), midnight(0)
    events = [
        # x: 3 views (u1 on both rolled days, v1 anonymous today) -> u1 once + v:v1 = 2 viewers
        ev(d2 + 10, "va", path="/p/x", user_id="u1"),
        ev(d1 + 10, "va", path="/p/x", user_id="u1"),
        ev(d0 + 10, "v1", path="/p/x"),
        # y: 3 views by three anonymous visitor-days, one impression -> 3 viewers, first on the tie
        ev(d2 + 20, "vb", path="/p/y"),
        ev(d1 + 20, "vb", path="/p/y"),
        ev(d0 + 20, "vc", path="/p/y"),
        ev(d0 + 21, "vc", path="/p/y", kind="impression", nav="beacon", view_type="listing"),
        # z: 1 view, and its author's own look (none)
        ev(d1 + 30, "vd", path="/p/z"),
        ev(d1 + 31, "ve", path="/p/z", user_id="u5", author_id="u5"),
    ]
    try:
        await write_batch(engine, Batch(events=events), derivation)
        async with engine.connect() as conn:
            await derive_pending(conn, day(2), day(0), derivation)
        for ago in (2, 1):
            await rollup_day(engine, day(ago), derivation.window_seconds, derivation=derivation)
        async with engine.connect() as conn:
            got, _ = await popular(conn, "artwork", day(2), day(0), 2)
            everything, _ = await popular(conn, "artwork", day(2), day(0), 10)
            assert got == await before(conn, "artwork", day(2), day(0), 2, derivation.window_seconds)
    finally:
        await engine.dispose()
    assert got == [
        {"id": "y", "views": 3, "unique_viewers": 3, "impressions": 1},
        {"id": "x", "views": 3, "unique_viewers": 2, "impressions": 0},
    ]
    assert everything[2] == {"id": "z", "views": 1, "unique_viewers": 1, "impressions": 0}
