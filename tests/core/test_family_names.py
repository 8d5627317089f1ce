"""Browser and OS names stored by older versions ("Mobile Safari", "Mac OS X") are read as today's
Plausible-style names, from raw events and from days rolled before the rename, merged exactly."""

from __future__ import annotations

import dataclasses
from datetime import date

from tests.core.test_rollup import WINDOW, at, ev, setup
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.report import build_report
from trackside.rollup import rollup_day
from trackside.storage.tables import DAILY_SITE_DIMS

DAY = date(2026, 3, 1)


def named(ts: float, visitor: str, browser: str, os: str):
    return dataclasses.replace(ev(ts, visitor=visitor, path="/about"), browser=browser, os=os)


async def test_old_names_read_as_todays_before_and_after_rollup(database_url):
    engine = await setup(database_url)
    try:
        await write_batch(
            engine,
            Batch(
                events=[
                    named(at(DAY, 10), "v1", "Mobile Safari", "iOS"),  # stored by an older version
                    named(at(DAY, 20), "v2", "Safari", "iOS"),
                    named(at(DAY, 30), "v3", "Chrome", "Mac OS X"),  # older
                    named(at(DAY, 40), "v4", "Chrome", "Mac"),
                ]
            ),
        )
        live = await build_report(engine, DAY, DAY, WINDOW)
        assert live["browsers"] == {"Chrome": 2, "Safari": 2}
        await rollup_day(engine, DAY, WINDOW)
        rolled = await build_report(engine, DAY, DAY, WINDOW)
        assert rolled["browsers"] == {"Chrome": 2, "Safari": 2}

        # A day rolled by an older version kept its own names: a second row for the same browser.
        async with engine.begin() as conn:
            await conn.execute(
                DAILY_SITE_DIMS.insert(),
                [
                    {
                        "day": DAY,
                        "dim": "browser",
                        "key": "Mobile Safari",
                        "count": 3,
                        "count_authenticated": 0,
                        "visitors": 1,
                        "visitors_authenticated": 0,
                    }
                ],
            )
        merged = await build_report(engine, DAY, DAY, WINDOW)
        assert merged["browsers"] == {"Safari": 5, "Chrome": 2}
    finally:
        await engine.dispose()
