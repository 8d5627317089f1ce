"""Item titles and one popular panel per content kind, in headless Chromium at a desktop (1280x800) and a phone
(390x844) viewport, on a real sidecar over SQLite and PostgreSQL in front of the real test upstream.

The site: the month of visits of `test_dashboard_query.py` (artworks a1 and b2), a blog post p1 and a recipe r1
(`recipe`, a content kind of this site's own settings, whose pages are `/r/[id]`). Titles: a1's comes from the
site's `X-Trackside-Title` hint (an answer through the sidecar, percent-encoded UTF-8 with `<b>` in it), b2's and
r1's from the items' API answers (`TRACKSIDE_TITLE_URL`), p1 has none (its kind asks no API). `dashboard_items.mjs`
signs in, reads the popular panels, opens a1 from its title, then r1's page.

Screenshots: TRACKSIDE_TEST_SCREENSHOTS=/some/dir writes PNGs there."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import FIREFOX, wait_for
from tests.e2e import helpers
from tests.e2e.test_dashboard import ADMIN, ROOT, SECRET, browser_or_skip, ev, midnight, token
from tests.e2e.test_dashboard_query import seed
from tests.servers import run_sidecar
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.settings import DEFAULT_CONTENT_RULES
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import ITEM_TITLES
from trackside.storage.writes import write_batch

pytestmark = pytest.mark.timeout(300)

SCRIPT = helpers.E2E_DIR / "dashboard_items.mjs"
HINTED = "Sunset <b>over</b> the café"


def more_looks() -> Batch:
    """A blog post and a recipe, a look each, 3 days ago (the month's seed has the artworks)."""
    t = midnight(3) + 15 * 3600
    return Batch(
        events=[
            ev(t, "k", "/b/p1", content_kind="blog_post", content_id="p1", label="/b/[blog]"),
            ev(t + 60, "k", "/r/r1", content_kind="recipe", content_id="r1", label="/r/[recipe]"),
        ]
    )


async def run_script(node: str, chromium: str, url: str, viewport: str, prefix: str, timeout: float = 120.0) -> dict:
    """node dashboard_items.mjs in its own process group, ended by id; its JSON."""
    environ = dict(
        DASHBOARD_URL=url,
        TOKEN=token("mod1", ["user", "moderator"]),
        CHROMIUM=chromium,
        VIEWPORT=viewport,
        SHOT_PREFIX=prefix,
        DASHBOARD_TIMEOUT_MS=str(int(timeout * 1000) - 5000),
    )
    return await helpers.run_browser_script(node, SCRIPT, environ, timeout)


@pytest.fixture
async def site_settings(upstream_url: str, make_settings: Any, database_url: str, tmp_path: Path):
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        jwt_secret=SECRET,
        admin_token=ADMIN,
        database_url=database_url,
        trust_roles_claim=True,
        content_rules={**DEFAULT_CONTENT_RULES, "recipe": ("/r/[id]", "/api/recipes/[id]")},
        title_url={"artwork": "/api/titled/artwork/{id}", "recipe": "/api/titled/recipe/{id}"},
    )
    await migrate(database_url)
    engine = create_engine(database_url)
    await write_batch(engine, seed(), derivation_of(settings))
    await write_batch(engine, more_looks(), derivation_of(settings))
    await engine.dispose()
    return settings


async def _hinted(database_url: str) -> bool:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(sa.select(ITEM_TITLES.c.title).where(ITEM_TITLES.c.content_id == "a1"))
            return found.scalar() == HINTED
    finally:
        await engine.dispose()


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["1280x800", "390x844"], ids=["desktop", "phone"])
async def test_item_titles_links_and_a_panel_per_kind(site_settings, viewport: str) -> None:
    node, chromium = browser_or_skip()
    prefix = "desktop" if viewport == "1280x800" else "phone"
    async with run_sidecar(site_settings) as (url, _):
        # The site names a1's title on its API answer (a look through the sidecar: a1 gets a fifth view).
        async with httpx.AsyncClient(base_url=url, headers={"user-agent": FIREFOX}) as c:
            hinted = await c.get("/api/p/a1", params={"title": "Sunset%20%3Cb%3Eover%3C%2Fb%3E%20the%20caf%C3%A9"})
        assert hinted.status_code == 200
        await wait_for(functools.partial(_hinted, site_settings.database_url), timeout=10)
        got = await run_script(node, chromium, url + ROOT, viewport, prefix)
    assert got["problems"] == [] and got["refused"] == [], (got["problems"], got["refused"])
    assert got["kinds_asked"] == 1  # once per page load

    ov = got["overview"]
    # One panel per kind of the settings, in their order: the site's own `recipe` too (no 400 anywhere).
    assert ov["order"] == ["popular-artwork", "popular-blog_post", "popular-recipe"]
    titles = {name: (p["title"], p["column"]) for name, p in ov["panels"].items()}
    assert titles == {
        "popular-artwork": ("Popular artworks", "Artwork"),
        "popular-blog_post": ("Popular blog posts", "Blog post"),
        "popular-recipe": ("Popular recipes", "Recipe"),
    }
    a1, b2 = ov["panels"]["popular-artwork"]["rows"]
    # a1: the hinted title, as text (`<b>` shows literally), its id beside it (hidden on a phone), links.
    assert (a1["key"], a1["name"], a1["elements_in_name"], a1["views"]) == ("a1", HINTED, 0, "5")
    assert a1["id"] == "a1" and a1["href"] == "#/item/artwork/a1"
    assert (a1["page"], a1["page_target"], a1["page_label"]) == ("/p/a1", "_blank", f"Open {HINTED} on the site")
    # b2: the title field of its API answer, asked when the panel was read.
    assert (b2["key"], b2["name"], b2["elements_in_name"], b2["page"]) == ("b2", "Fetched <b>b2</b>", 0, "/p/b2")
    assert ov["bold"] == 0
    # p1: no title known (blog posts ask no API here): the id, linked to /b/p1 by the content rules.
    (p1,) = ov["panels"]["popular-blog_post"]["rows"]
    assert (p1["key"], p1["name"], p1["id"], p1["href"], p1["page"]) == (
        "p1",
        "p1",
        None,
        "#/item/blog_post/p1",
        "/b/p1",
    )
    (r1,) = ov["panels"]["popular-recipe"]["rows"]
    assert (r1["name"], r1["href"], r1["page"], r1["views"]) == ("Soup", "#/item/recipe/r1", "/r/r1", "1")
    assert ov["overflow_x"] <= 0  # nothing scrolls sideways, on a phone neither
    # The looked-at items panel (v2 by content id, `include.titles`): a1's stored title as text; r1 and p1 have
    # none stored when it is read (theirs is asked by the popular panels at the same time, or never).
    looked = {key: (title, shown) for key, title, shown in ov["looked"]}
    assert looked["a1"] == (HINTED, HINTED + "a1")
    assert looked["p1"] == (None, "p1")

    item = got["item"]
    assert item["hash"] == "#/item/artwork/a1" and item["ready"] == "item"
    assert (item["title"], item["data_title"], item["page"], item["bold"]) == (HINTED, HINTED, "/p/a1", 0)
    assert item["heading"] == f"Artwork {HINTED}a1" and item["page_text"] == "Open /p/a1 on the site ↗"
    assert item["crumbs"] == "Overview/Artworks/a1"
    recipe = got["recipe"]
    assert (recipe["title"], recipe["page"], recipe["crumbs"]) == ("Soup", "/r/r1", "Overview/Recipes/r1")
    assert item["overflow_x"] <= 0 and recipe["overflow_x"] <= 0
