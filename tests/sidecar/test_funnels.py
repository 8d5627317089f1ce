"""Funnels through a real sidecar on both backends: `POST /_trackside/api/v2/funnel` over hand-built
journeys stored through the write path (facts derived as in production), with exact counts, drop-offs,
rates and median times; the in-order and one-visit rules; filters; goals as steps; refusals; the
named funnels' API (`/_trackside/api/funnels`) and the settings' funnels.

The journeys (D is yesterday, T today, UTC), funnel `/` > `/p/*` > goal `upload`:
- va: `/` 10:00, `/p/a1` 10:01, upload 10:03: all three (60 s, 120 s);
- vb: `/` 10:00, `/p/b2` 10:02: two steps (120 s);
- vc: `/p/a1` 10:00, `/` 10:01: the artwork came first, so step 1 only (in order);
- vd: `/` 10:00, then 40 minutes later `/p/a1` 10:40 and upload 10:41: a new visit, step 1 only;
- u5 (signed in) on D from vu1: `/` 09:00, `/p/x` 09:03 (180 s); on T from vu2: `/` 01:00,
  `/p/y` 01:05, upload 01:06 (300 s, 60 s): one user over the range, all three steps, the time to
  step 2 from their first visit reaching it (D: 180 s), to step 3 from T's (60 s);
- vf on a phone: `/` 11:00:00, `/p/z` 11:00:30, upload 11:01:30 (30 s, 60 s);
- vg: `/` 12:00, `/p/a1` 12:31: 31 minutes apart, two visits, step 1 only;
- vh: `/` 12:00, `/p/a1` 12:30: exactly 30 minutes, one visit, two steps (1800 s).
Goals: signup, upload (events), Artwork (the page pattern `/p/*`)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN, MOD, SECRET, bearer, ev, midnight
from tests.storing import write_batch
from trackside.api_keys import create_key
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.errors import ConfigError
from trackside.funnels import FunnelError, parse_funnels_setting
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate

ROUTE = "/_trackside/api/v2/funnel"
NAMED = "/_trackside/api/funnels"
H, M = 3600, 60


def _day(days_ago: int) -> str:
    return datetime.fromtimestamp(midnight(days_ago), UTC).date().isoformat()


D, T = _day(1), _day(0)
ALL = [D, T]
FUNNEL = [{"page": "/"}, {"page": "/p/*"}, {"goal": "upload"}]


def upload(ts: float, visitor: str, **kw):
    return ev(
        ts, visitor, path="/api/post/upload", kind="api_call", nav="api", method="POST", event_name="upload", **kw
    )


def journeys():
    d, t = midnight(1), midnight(0)
    u5 = dict(user_id="u5")
    phone = dict(device="mobile", browser="Safari", os="iOS")
    return [
        ev(d + 10 * H, "va", path="/"),
        ev(d + 10 * H + M, "va", path="/p/a1"),
        upload(d + 10 * H + 3 * M, "va"),
        ev(d + 10 * H, "vb", path="/"),
        ev(d + 10 * H + 2 * M, "vb", path="/p/b2"),
        ev(d + 10 * H, "vc", path="/p/a1"),
        ev(d + 10 * H + M, "vc", path="/"),
        ev(d + 10 * H, "vd", path="/"),
        ev(d + 10 * H + 40 * M, "vd", path="/p/a1"),
        upload(d + 10 * H + 41 * M, "vd"),
        ev(d + 9 * H, "vu1", path="/", **u5),
        ev(d + 9 * H + 3 * M, "vu1", path="/p/x", **u5),
        ev(t + 1 * H, "vu2", path="/", **u5),
        ev(t + 1 * H + 5 * M, "vu2", path="/p/y", **u5),
        upload(t + 1 * H + 6 * M, "vu2", **u5),
        ev(d + 11 * H, "vf", path="/", **phone),
        ev(d + 11 * H + 30, "vf", path="/p/z", **phone),
        upload(d + 11 * H + 90, "vf", **phone),
        ev(d + 12 * H, "vg", path="/"),
        ev(d + 12 * H + 31 * M, "vg", path="/p/a1"),
        ev(d + 12 * H, "vh", path="/"),
        ev(d + 12 * H + 30 * M, "vh", path="/p/a1"),
    ]


@pytest.fixture
async def site(upstream_url, make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, admin_token=ADMIN,
        database_url=database_url, trust_roles_claim=True, goals=("signup", "upload", "Artwork=page:/p/*"),
        funnels='{"Upload": [{"page": "/"}, {"page": "/p/*"}, {"goal": "upload"}]}',
    )  # fmt: skip
    engine = create_engine(database_url)
    await write_batch(engine, Batch(events=journeys()), derivation_of(settings))
    yield settings, engine
    await engine.dispose()


async def ask(settings, bodies, headers=MOD):
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=headers) as c:
            return [await c.post(ROUTE, json=body) for body in bodies]


def figures(response):
    assert response.status_code == 200, response.text
    return [
        (s["label"], s["visitors"], s["dropoff"], s["conversion_rate"], s["median_seconds_from_previous"])
        for s in response.json()["steps"]
    ]


async def test_the_journeys_make_the_funnel(site):
    settings, _ = site
    (whole,) = await ask(settings, [{"date_range": ALL, "steps": FUNNEL}])
    # Step 1: va, vb, vc, vd, u5, vf, vg, vh. Step 2: va 60, vb 120, u5 180 (D's visit), vf 30,
    # vh 1800: median 120. Step 3: va 120, u5 60 (T's visit), vf 60: median 60.
    assert figures(whole) == [
        ("/", 8, 0, 100.0, None),
        ("/p/*", 5, 3, 62.5, 120.0),
        ("upload", 3, 2, 37.5, 60.0),
    ]
    body = whole.json()
    assert [s["conversion_rate_step"] for s in body["steps"]] == [100.0, 62.5, 60.0]
    assert [s["step"] for s in body["steps"]] == FUNNEL
    meta = body["meta"]
    assert meta["visitors"].startswith("unique visitors of the period who reached the step in order within one visit")
    assert "signed-in user counts once over the range" in meta["visitors"]
    for key in ("dropoff", "conversion_rate", "median_seconds_from_previous", "visit", "filters", "computed_at"):
        assert key in meta
    assert body["query"]["steps"] == FUNNEL
    assert whole.headers["cache-control"] == "private, no-store"


async def test_in_order_and_one_visit_rules(site):
    settings, _ = site
    answers = await ask(
        settings,
        [
            # Reversed: the artwork before the home page (vc; and vd's second visit has no `/`).
            {"date_range": ALL, "steps": [{"page": "/p/*"}, {"page": "/"}]},
            # The artwork, then an upload: vd's second visit (60 s) counts, va 120, u5 60 (T), vf 60.
            {"date_range": ALL, "steps": [{"page": "/p/*"}, {"goal": "upload"}]},
            # A step repeated needs a later event: nobody saw `/` twice in one visit.
            {"date_range": ALL, "steps": [{"page": "/"}, {"page": "/"}]},
        ],
    )
    # vc only (60 s): everyone else saw `/` first.
    assert figures(answers[0]) == [("/p/*", 8, 0, 100.0, None), ("/", 1, 7, 12.5, 60.0)]
    assert figures(answers[1]) == [("/p/*", 8, 0, 100.0, None), ("upload", 4, 4, 50.0, 60.0)]
    assert figures(answers[2]) == [("/", 8, 0, 100.0, None), ("/", 0, 8, 0.0, None)]


async def test_goals_as_steps_and_date_ranges(site):
    settings, _ = site
    answers = await ask(
        settings,
        [
            # A page goal as a step is its pattern.
            {"date_range": ALL, "steps": [{"page": "/"}, {"goal": "Artwork"}, {"goal": "upload"}]},
            # Today alone: u5's second visit (300 s, 60 s).
            {"date_range": [T, T], "steps": FUNNEL},
            {"date_range": "day", "steps": FUNNEL},
            # Yesterday alone: u5 reaches step 2 only (180 s).
            {"date_range": [D, D], "steps": FUNNEL},
            # A date-time range: D 09:30 to 11:59, va, vb, vc, vd and vf.
            {"date_range": [f"{D}T09:30:00Z", f"{D}T11:59:59Z"], "steps": FUNNEL},
        ],
    )
    assert figures(answers[0]) == [
        ("/", 8, 0, 100.0, None),
        ("Artwork", 5, 3, 62.5, 120.0),
        ("upload", 3, 2, 37.5, 60.0),
    ]
    today = [("/", 1, 0, 100.0, None), ("/p/*", 1, 0, 100.0, 300.0), ("upload", 1, 0, 100.0, 60.0)]
    assert figures(answers[1]) == today
    assert figures(answers[2]) == today
    # va 60, vb 120, u5 180, vf 30, vh 1800; va 120, vf 60.
    assert figures(answers[3]) == [("/", 8, 0, 100.0, None), ("/p/*", 5, 3, 62.5, 120.0), ("upload", 2, 3, 25.0, 90.0)]
    # va 60, vb 120, vf 30; va 120, vf 60.
    assert figures(answers[4]) == [("/", 5, 0, 100.0, None), ("/p/*", 3, 2, 60.0, 60.0), ("upload", 2, 1, 40.0, 90.0)]


async def test_filters_keep_visits(site):
    settings, _ = site
    answers = await ask(
        settings,
        [
            {"date_range": ALL, "steps": FUNNEL, "filters": [["is", "visit:device", ["Mobile"]]]},
            {"date_range": ALL, "steps": FUNNEL, "filters": [["is_not", "visit:device", ["Mobile"]]]},
            # An event filter keeps the visits holding such a page: vb's.
            {"date_range": ALL, "steps": FUNNEL, "filters": [["contains", "event:page", ["/p/b"]]]},
            # Visits holding an upload: va's, vd's second (no `/`), u5's on T, vf's.
            {"date_range": ALL, "steps": FUNNEL, "filters": [["is", "event:goal", ["upload"]]]},
        ],
    )
    assert figures(answers[0]) == [("/", 1, 0, 100.0, None), ("/p/*", 1, 0, 100.0, 30.0), ("upload", 1, 0, 100.0, 60.0)]
    # va 60, vb 120, u5 180, vh 1800 (median 150); va 120, u5 60.
    assert figures(answers[1]) == [
        ("/", 7, 0, 100.0, None),
        ("/p/*", 4, 3, 57.14, 150.0),
        ("upload", 2, 2, 28.57, 90.0),
    ]
    assert figures(answers[2]) == [("/", 1, 0, 100.0, None), ("/p/*", 1, 0, 100.0, 120.0), ("upload", 0, 1, 0.0, None)]
    # u5's visit on T: 300 s to the artwork.
    assert figures(answers[3]) == [("/", 3, 0, 100.0, None), ("/p/*", 3, 0, 100.0, 60.0), ("upload", 3, 0, 100.0, 60.0)]


async def test_bad_funnels_are_400s_naming_the_problem(site):
    settings, _ = site
    bad = [
        ({"date_range": ALL, "steps": [{"page": "/"}]}, "steps: a funnel has 2 to 8 steps, got 1"),
        ({"date_range": ALL, "steps": [{"page": "/"}] * 9}, "steps: a funnel has 2 to 8 steps, got 9"),
        ({"date_range": ALL}, 'steps is required: 2 to 8 steps, each {"page": PATTERN} or {"goal": NAME}'),
        ({"date_range": ALL, "steps": "/ > /p/*"}, "steps: a list of 2 to 8 steps"),
        (
            {"date_range": ALL, "steps": [{"page": "/"}, {"goal": "share"}]},
            "steps[1].goal: no goal named 'share' (goals: Artwork, signup, upload)",
        ),
        (
            {"date_range": ALL, "steps": [{"page": "/"}, {"page": "p/*"}]},
            "steps[1].page: 'p/*': a page pattern starts with /",
        ),
        (
            {"date_range": ALL, "steps": [{"page": "/"}, {"page": "/a/***"}]},
            "steps[1].page: '/a/***': * is one segment",
        ),
        (
            {"date_range": ALL, "steps": [{"page": "/"}, {"path": "/a"}]},
            'steps[1]: one of {"page": PATTERN} or {"goal": NAME}',
        ),
        ({"date_range": ALL, "steps": [{"page": "/"}, {"page": "/a", "goal": "upload"}]}, "steps[1]: one of"),
        ({"date_range": ALL, "steps": [{"page": "/"}, {"goal": 3}]}, "steps[1].goal: a non-empty string"),
        ({"steps": FUNNEL}, "date_range is required"),
        ({"date_range": "5d", "steps": FUNNEL}, "date_range '5d' is not supported"),
        (
            {"date_range": ALL, "steps": FUNNEL, "filters": [["is", "visit:planet", ["Mars"]]]},
            "dimension 'visit:planet' is not supported",
        ),
        (
            {"date_range": ALL, "steps": FUNNEL, "filters": [["is", "event:goal", ["nope"]]]},
            "goal 'nope' is not configured",
        ),
        ({"date_range": ALL, "steps": FUNNEL, "metrics": ["visitors"]}, "parameter 'metrics' is not supported"),
        ([1, 2], "the funnel is a JSON object {date_range, steps, filters}"),
    ]
    answers = await ask(settings, [body for body, _ in bad])
    for (body, message), answer in zip(bad, answers, strict=True):
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"].startswith(message), (body, answer.json())


async def test_who_may_ask_and_the_named_funnels(site):
    settings, engine = site
    _, read_key = await create_key(engine, "reports", "read")
    read = {"authorization": "Bearer " + read_key}
    body = {"date_range": ALL, "steps": FUNNEL}
    mine = {"name": "Sign up", "steps": [{"page": "/"}, {"goal": "signup"}]}
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            nobody = await c.post(ROUTE, json=body)
            stranger = await c.post(ROUTE, content=b"{not json")
            user = await c.post(ROUTE, json=body, headers=bearer("u1"))
            by_key = await c.post(ROUTE, json=body, headers=read)
            admin = await c.post(ROUTE, json=body, headers={"authorization": "Bearer " + ADMIN})
            not_json = await c.post(ROUTE, content=b"{not json", headers=MOD)
            listed = await c.get(NAMED, headers=MOD)
            added = await c.post(NAMED, json=mine, headers=MOD)
            again = await c.post(NAMED, json=mine, headers=MOD)
            settings_name = await c.post(NAMED, json={**mine, "name": "Upload"}, headers=MOD)
            unknown_goal = await c.post(
                NAMED, json={"name": "X", "steps": [{"page": "/"}, {"goal": "nope"}]}, headers=MOD
            )
            one_step = await c.post(NAMED, json={"name": "X", "steps": [{"page": "/"}]}, headers=MOD)
            no_name = await c.post(NAMED, json={"steps": FUNNEL}, headers=MOD)
            extra = await c.post(NAMED, json={**mine, "color": "red"}, headers=MOD)
            by_key_add = await c.post(NAMED, json={**mine, "name": "Y"}, headers=read)
            by_key_list = await c.get(NAMED, headers=read)
            user_list = await c.get(NAMED, headers=bearer("u1"))
            listed_after = await c.get(NAMED, headers=MOD)
            remove_settings = await c.delete(NAMED + "/Upload", headers=MOD)
            removed = await c.delete(NAMED + "/Sign up", headers=MOD)
            removed_again = await c.delete(NAMED, params={"name": "Sign up"}, headers=MOD)
            listed_last = await c.get(NAMED, headers=MOD)
    assert nobody.status_code == 401 and nobody.json() == {"error": "a Bearer token is required"}
    assert stranger.status_code == 401
    assert user.status_code == 403 and user.json() == {"error": "moderators, the admin token or a read API key only"}
    assert (
        figures(by_key)
        == figures(admin)
        == [
            ("/", 8, 0, 100.0, None),
            ("/p/*", 5, 3, 62.5, 120.0),
            ("upload", 3, 2, 37.5, 60.0),
        ]
    )
    assert not_json.status_code == 400 and not_json.json() == {"error": "the body is not valid JSON"}
    assert listed.status_code == 200
    assert listed.json() == {"funnels": [{"name": "Upload", "steps": FUNNEL, "origin": "settings", "created_at": None}]}
    assert added.status_code == 201, added.text
    assert added.json()["name"] == "Sign up" and added.json()["origin"] == "database"
    assert again.status_code == 409 and again.json()["detail"] == "funnel 'Sign up' exists"
    assert settings_name.status_code == 409
    assert settings_name.json()["detail"] == "funnel 'Upload' is defined in the settings (TRACKSIDE_FUNNELS)"
    assert unknown_goal.status_code == 400
    assert unknown_goal.json()["detail"].startswith("steps[1].goal: no goal named 'nope'")
    assert one_step.status_code == 400 and one_step.json()["detail"] == "steps: a funnel has 2 to 8 steps, got 1"
    assert no_name.status_code == 400 and no_name.json()["detail"].startswith("name: required")
    assert extra.status_code == 400 and extra.json()["detail"] == "color: unknown field (name, steps)"
    assert by_key_add.status_code == 403
    assert by_key_list.status_code == 200 and len(by_key_list.json()["funnels"]) == 2
    assert user_list.status_code == 403
    assert [(f["name"], f["steps"], f["origin"]) for f in listed_after.json()["funnels"]] == [
        ("Upload", FUNNEL, "settings"),
        ("Sign up", mine["steps"], "database"),
    ]
    assert remove_settings.status_code == 409
    assert removed.status_code == 204
    assert removed_again.status_code == 404
    assert [f["name"] for f in listed_last.json()["funnels"]] == ["Upload"]


def test_the_settings_funnels():
    compact = parse_funnels_setting("Upload=/ > /p/* > goal:upload; Sign up = / > goal:signup")
    assert [f.as_dict() for f in compact] == [
        {"name": "Upload", "steps": FUNNEL},
        {"name": "Sign up", "steps": [{"page": "/"}, {"goal": "signup"}]},
    ]
    as_json = parse_funnels_setting('{"Upload": [{"page": "/"}, {"page": "/p/*"}, {"goal": "upload"}]}')
    assert as_json == compact[:1]
    assert parse_funnels_setting("") == []
    for raw, message in [
        ("Upload=/", "funnel 'Upload': steps: a funnel has 2 to 8 steps, got 1"),
        ("Upload=/ > p/*", "funnel 'Upload': steps[1].page: 'p/*': a page pattern starts with /"),
        ("A=/ > /b; A=/ > /c", "funnel 'A' is defined twice"),
        ("/ > /b", "'/ > /b': write NAME=STEP > STEP > ... (goal:NAME for a goal)"),
        ("{not json", "not valid JSON"),
    ]:
        with pytest.raises(FunnelError) as caught:
            parse_funnels_setting(raw)
        assert str(caught.value).startswith(message), str(caught.value)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"TRACKSIDE_FUNNELS": "Upload=/ > p/*"})
    assert str(refused.value) == (
        "TRACKSIDE_FUNNELS: funnel 'Upload': steps[1].page: 'p/*': a page pattern starts with / "
        "(at most 512 characters), e.g. /p/*"
    )
