"""Route labels' daily rows (`trackside.storage.label_days`), written by the rollup, answer v2's queries by
`event:props:label` alone for rolled days: the same figures as the facts (page views, events, visitors with a
signed-in user on several days counted once, visits, time on page, scroll depth), on both backends, over ranges
that mix rolled days with today's facts; the rows are what is read; a dirty day is read from its facts again;
the rows go with their page view facts. The site is `test_v2_visit_days`'s (B, D rolled; T today)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from tests.sidecar.test_v2_visit_days import RANGES, B, D, T, ask, site  # noqa: F401 - the fixture
from trackside.rollup import rollup_day
from trackside.storage.label_days import days_with_rows, prune_label_days

LABEL = ["event:props:label"]
BODIES = [
    {"metrics": ["pageviews", "time_on_page"], "dimensions": LABEL,
     "order_by": [["pageviews", "desc"], ["event:props:label", "asc"]], "pagination": {"limit": 100}},
    {"metrics": ["visitors", "pageviews", "events", "scroll_depth", "time_on_page"], "dimensions": LABEL},
    {"metrics": ["visits", "visitors"], "dimensions": LABEL},
    {"metrics": ["percentage", "visitors"], "dimensions": LABEL, "pagination": {"limit": 2, "offset": 1}},
    {"metrics": ["events"], "dimensions": LABEL, "order_by": [["event:props:label", "desc"]]},
]  # fmt: skip


def day(text):
    return datetime.fromisoformat(text).date()


async def answers(settings, engine):
    return {(i, r): await ask(settings, engine, body, *r) for i, body in enumerate(BODIES) for r in RANGES}


async def test_rolled_days_answer_from_their_rows_the_same_figures(site):  # noqa: F811
    settings, engine, derivation = site
    from_facts = await answers(settings, engine)
    for d in (B, D):
        await rollup_day(engine, day(d), derivation.window_seconds, derivation=derivation)
    async with engine.connect() as conn:
        assert [d.isoformat() for d in await days_with_rows(conn, day(B), day(T))] == [B, D]
    assert await answers(settings, engine) == from_facts
    # Exact: u9 on B, D and T counts once over the range; the labels' page views add up.
    got = await ask(settings, engine, {"metrics": ["visitors", "pageviews"], "dimensions": LABEL}, B, T)
    assert got == [[d, m[:2]] for d, m in from_facts[(1, (B, T))]] and got
    assert sum(m[1] for _, m in got) == 12  # 3 + 8 + 1 page views (test_v2_visit_days)
    # Filters, hours and time dimensions are read from facts, as before (nothing to compare with: the same).
    filtered = {"metrics": ["pageviews"], "dimensions": LABEL, "filters": [["is", "visit:country", ["GB"]]]}
    assert await ask(settings, engine, filtered, B, T)


async def test_the_rows_are_what_is_read(site):  # noqa: F811
    """A row changed shows (on purpose here); a day marked dirty by a late event is read from its facts again."""
    settings, engine, derivation = site
    await rollup_day(engine, day(D), derivation.window_seconds, derivation=derivation)
    body = {"metrics": ["pageviews"], "dimensions": LABEL}
    before = await ask(settings, engine, body, D, D)
    label, views = before[0][0][0], before[0][1][0]
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE label_days SET page_views = page_views + 100 WHERE day = :d AND label = :l"),
            {"d": day(D), "l": label},
        )
    assert (await ask(settings, engine, body, D, D))[0] == [[label], [views + 100]]
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE rollup_days SET dirty = true WHERE day = :d"), {"d": day(D)})
    assert await ask(settings, engine, body, D, D) == before


async def test_rows_go_with_their_page_view_facts(site):  # noqa: F811
    settings, engine, derivation = site
    for d in (B, D):
        await rollup_day(engine, day(d), derivation.window_seconds, derivation=derivation)

    async def days():
        async with engine.connect() as conn:
            found = await conn.execute(sa.text("SELECT DISTINCT day FROM label_days ORDER BY day"))
            return [str(d)[:10] for d in found.scalars()]

    async with engine.begin() as conn:
        assert await prune_label_days(conn, day(T)) == 0
    assert await days() == [B, D]
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM fact_page_views WHERE day = :d"), {"d": day(B)})
        assert await prune_label_days(conn, day(T)) > 0
    assert await days() == [D]
