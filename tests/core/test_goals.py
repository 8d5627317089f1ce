"""Goals: from the settings (default: the event rules' names) and the goals table; page patterns in
Python and in SQL on both backends; the CLI."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sidecar.cli import main
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.errors import ConfigError
from trackside.events import Event
from trackside.goals import (
    DATABASE,
    EVENT,
    PAGE,
    SETTINGS,
    Goal,
    GoalConflict,
    GoalError,
    add_goal,
    check_goal,
    like_is_exact,
    list_goals,
    load_goals,
    page_goal_like,
    page_goal_regex,
    remove_goal,
    settings_goals,
)
from trackside.paths import Labeler
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import FACT_PAGE_VIEWS


def test_default_goals_are_the_event_rules_names():
    assert settings_goals(Settings()) == [Goal("signup", EVENT, "signup"), Goal("upload", EVENT, "upload")]
    assert settings_goals(Settings(event_rules=())) == []


def test_goals_setting():
    settings = Settings.from_env(
        {"TRACKSIDE_GOALS": "signup, upload ,Visited artwork=page:/p/*, Shared=event:share, Docs=page:/docs/**"}
    )
    assert settings.goals == (
        "signup",
        "upload",
        "Visited artwork=page:/p/*",
        "Shared=event:share",
        "Docs=page:/docs/**",
    )
    assert settings_goals(settings) == [
        Goal("signup", EVENT, "signup"),
        Goal("upload", EVENT, "upload"),
        Goal("Visited artwork", PAGE, "/p/*"),
        Goal("Shared", EVENT, "share"),
        Goal("Docs", PAGE, "/docs/**"),
    ]
    assert settings_goals(Settings.from_env({"TRACKSIDE_GOALS": ""})) == []  # set to nothing: none
    assert Settings.from_env(settings.to_env()).goals == settings.goals


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Visited=page:p/*", "TRACKSIDE_GOALS: match: a page pattern starts with /"),
        ("Visited=url:/p/*", "TRACKSIDE_GOALS: kind: 'Visited=url:/p/\\*': write NAME=event:EVENT or NAME=page:"),
        ("signup,signup", "TRACKSIDE_GOALS: name: 'signup' is defined twice"),
        ("=event:x", "TRACKSIDE_GOALS: name: 1 to 64 printable characters"),
        ("A=page:/p/***", "TRACKSIDE_GOALS: match: \\* is one segment's run"),
    ],
)
def test_goals_setting_errors_name_the_setting_and_field(value, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"TRACKSIDE_GOALS": value})


def test_check_goal_names_the_bad_field():
    for args, field in [
        (("", EVENT, "signup"), "name"),
        (("x" * 65, EVENT, "signup"), "name"),
        (("a", "url", "/p"), "kind"),
        (("a", EVENT, ""), "match"),
        (("a", EVENT, "two words"), "match"),
        (("a", PAGE, "/p?x=1"), "match"),
        (("a", PAGE, "/" + "p" * 512), "match"),
    ]:
        with pytest.raises(GoalError) as caught:
            check_goal(*args)
        assert caught.value.field == field
    assert check_goal(" Sign up ", EVENT, " signup ") == Goal("Sign up", EVENT, "signup")


@pytest.mark.parametrize(
    ("pattern", "like", "exact", "yes", "no"),
    [
        ("/p/*", "/p/%", False, ["/p/a1", "/p/", "/p/[post]"], ["/p/a1/edit", "/p", "/pa/a1"]),
        ("/docs/**", "/docs/%", True, ["/docs/a", "/docs/a/b/c", "/docs/"], ["/docs", "/doc/a"]),
        ("/u/*/favourites", "/u/%/favourites", False, ["/u/ann/favourites"], ["/u/a/b/favourites"]),
        ("/a_b%/**", "/a\\_b\\%/%", True, ["/a_b%/x"], ["/aXb%/x", "/a_bc/x"]),
        ("/about", "/about", True, ["/about"], ["/about/", "/aboutx"]),
    ],
)
def test_page_patterns(pattern, like, exact, yes, no):
    goal = Goal("g", PAGE, pattern)
    assert page_goal_like(pattern) == like
    assert like_is_exact(pattern) is exact
    assert [p for p in yes + no if goal.matches_path(p)] == yes
    assert page_goal_regex(pattern).pattern.startswith("^")
    assert not Goal("e", EVENT, "signup").matches_path("/p/a1")


DAY = date(2026, 3, 2)


def _page_view(n: int, path: str, settings: Settings) -> Event:
    ts = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp() + n * 3600
    return Event(f"0000{n:04x}-0000-7000-8000-000000000000", ts, "page_view", "document", "GET", path,
                 Labeler(settings.label_rules).label(path), 200, f"{n:032x}", device="desktop")  # fmt: skip


async def test_page_goals_in_sql_match_as_in_python(database_url):
    """The facts' paths tested by `Goal.sql_condition` on the real backend: the LIKE with the
    regular expression, and the LIKE alone where it is exact."""
    settings = Settings(database_url=database_url)
    paths = ["/p/a1", "/p/a1/edit", "/p/" + "z" * 70, "/docs/a/b", "/a_b%/x", "/aXb%/x", "/u/ann/favourites"]
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        events = [_page_view(n, p, settings) for n, p in enumerate(paths)]
        await write_batch(engine, Batch(events=events), derivation_of(settings))
        async with engine.connect() as conn:
            stored = sorted((await conn.execute(sa.select(FACT_PAGE_VIEWS.c.path))).scalars())
            assert stored == sorted(["/p/a1", "/p/a1/edit", "/p/[post]", "/docs/a/b", "/a_b%/x", "/aXb%/x",
                                     "/u/ann/favourites"])  # fmt: skip
            for pattern in ["/p/*", "/p/**", "/docs/**", "/a_b%/*", "/u/*/favourites", "/*/*"]:
                goal = Goal("g", PAGE, pattern)
                query = sa.select(FACT_PAGE_VIEWS.c.path).where(goal.sql_condition(FACT_PAGE_VIEWS.c.path))
                found = sorted((await conn.execute(query)).scalars())
                assert found == sorted(p for p in stored if goal.matches_path(p)), pattern
            counts = {
                pattern: (
                    await conn.execute(
                        sa.select(sa.func.count()).where(Goal("g", PAGE, pattern).sql_condition(FACT_PAGE_VIEWS.c.path))
                    )
                ).scalar_one()
                for pattern in ["/p/*", "/p/**", "/*/*"]
            }
            assert counts == {"/p/*": 2, "/p/**": 3, "/*/*": 4}
        with pytest.raises(ValueError):
            Goal("e", EVENT, "signup").sql_condition(FACT_PAGE_VIEWS.c.path)
    finally:
        await engine.dispose()


async def test_stored_goals_add_list_remove(database_url):
    settings = Settings(database_url=database_url, goals=("signup", "Artwork=page:/p/*"))
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            added = await add_goal(conn, settings, Goal("Uploaded", EVENT, "upload"))
            await add_goal(conn, settings, Goal("Blog", PAGE, "/b/**"))
        assert (added.origin, added.goal) == (DATABASE, Goal("Uploaded", EVENT, "upload"))
        async with engine.begin() as conn:
            with pytest.raises(GoalConflict, match="goal 'Uploaded' exists"):
                await add_goal(conn, settings, Goal("Uploaded", PAGE, "/x"))
        async with engine.begin() as conn:
            with pytest.raises(GoalConflict, match="defined in the settings"):
                await add_goal(conn, settings, Goal("signup", EVENT, "signup"))
        async with engine.begin() as conn:
            with pytest.raises(GoalError):
                await add_goal(conn, settings, Goal("Bad", PAGE, "p/*"))
        async with engine.connect() as conn:
            assert await load_goals(conn, settings) == [
                Goal("signup", EVENT, "signup"),
                Goal("Artwork", PAGE, "/p/*"),
                Goal("Blog", PAGE, "/b/**"),
                Goal("Uploaded", EVENT, "upload"),
            ]
            listed = await list_goals(conn, settings)
        assert [(g.goal.name, g.origin) for g in listed] == [
            ("signup", SETTINGS),
            ("Artwork", SETTINGS),
            ("Blog", DATABASE),
            ("Uploaded", DATABASE),
        ]
        assert listed[0].created_at is None and listed[2].created_at is not None
        # A stored goal the settings come to define is hidden by the settings' one.
        later = Settings(database_url=database_url, goals=("Blog=event:blogged",))
        async with engine.connect() as conn:
            assert await load_goals(conn, later) == [Goal("Blog", EVENT, "blogged"), Goal("Uploaded", EVENT, "upload")]
        async with engine.begin() as conn:
            assert await remove_goal(conn, settings, "Blog") is True
            assert await remove_goal(conn, settings, "Blog") is False
            with pytest.raises(GoalConflict, match="change TRACKSIDE_GOALS"):
                await remove_goal(conn, settings, "Artwork")
        async with engine.connect() as conn:
            assert [g.name for g in await load_goals(conn, settings)] == ["signup", "Artwork", "Uploaded"]
    finally:
        await engine.dispose()


def test_cli_goals(tmp_path, sqlite_url):
    env = {"TRACKSIDE_DATABASE_URL": sqlite_url, "TRACKSIDE_LOG_LEVEL": "warning"}
    runner = CliRunner()
    added = runner.invoke(main, ["goals", "add", "Visited artwork", "--page", "/p/*"], env=env)
    assert (added.exit_code, added.output) == (0, "added goal 'Visited artwork' (page /p/*)\n")
    assert runner.invoke(main, ["goals", "add", "Shared", "--event", "share"], env=env).exit_code == 0
    again = runner.invoke(main, ["goals", "add", "Shared", "--event", "share"], env=env)
    assert (again.exit_code, again.output) == (1, "trackside: goal 'Shared' exists\n")
    both = runner.invoke(main, ["goals", "add", "X", "--event", "a", "--page", "/b"], env=env)
    assert both.exit_code == 2 and "give either --event EVENT or --page PATTERN" in both.output
    bad = runner.invoke(main, ["goals", "add", "X", "--page", "b"], env=env)
    assert bad.exit_code == 2 and "--page" in bad.output and "starts with /" in bad.output
    listed = runner.invoke(main, ["goals", "list"], env=env)
    assert listed.output.splitlines() == [
        "event  settings  signup  signup",
        "event  settings  upload  upload",
        "event  database  Shared  share",
        "page   database  Visited artwork  /p/*",
    ]
    as_json = json.loads(runner.invoke(main, ["goals", "list", "--json"], env=env).output)
    assert [(g["name"], g["kind"], g["match"], g["origin"]) for g in as_json] == [
        ("signup", "event", "signup", "settings"),
        ("upload", "event", "upload", "settings"),
        ("Shared", "event", "share", "database"),
        ("Visited artwork", "page", "/p/*", "database"),
    ]
    removed = runner.invoke(main, ["goals", "remove", "Shared"], env=env)
    assert (removed.exit_code, removed.output) == (0, "removed goal 'Shared'\n")
    gone = runner.invoke(main, ["goals", "remove", "Shared"], env=env)
    assert (gone.exit_code, gone.output) == (1, "trackside: no stored goal 'Shared'\n")
    own = runner.invoke(main, ["goals", "remove", "signup"], env=env)
    assert own.exit_code == 1 and "defined in the settings" in own.output
