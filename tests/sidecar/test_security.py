"""Who may see what: placeholder secrets and the roles-claim choice refused at start-up, the claim
ignored unless believed, failed sign-ins limited per client address, the metrics and the OpenAPI
document behind a token; CSV cells a spreadsheet would run as formulas; query input that must be a
400, not a 500."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sidecar.api_routes import _csv_rows
from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN, MOD, SECRET, ev, midnight
from trackside.batch import Batch
from trackside.errors import ConfigError
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

API = "/_trackside/api/v1"
LONG = "0123456789abcdef0123456789abcdef-long-enough"
BASE = {"TRACKSIDE_DATABASE_URL": "sqlite+aiosqlite:///./x.db"}


# ----------------------------------------------------------------------------------------- start-up checks


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # compose.yaml's former defaults
        ({"TRACKSIDE_JWT_SECRET": "change-me-change-me-change-me-change-me"}, "TRACKSIDE_JWT_SECRET"),
        ({"TRACKSIDE_ADMIN_TOKEN": "change-me-admin-token-0123456789"}, "TRACKSIDE_ADMIN_TOKEN"),
        ({"TRACKSIDE_JWT_SECRET": "secret", "TRACKSIDE_TRUST_ROLES_CLAIM": "0"}, "TRACKSIDE_JWT_SECRET"),
        ({"TRACKSIDE_JWT_SECRET": "ChangeMe", "TRACKSIDE_TRUST_ROLES_CLAIM": "0"}, "TRACKSIDE_JWT_SECRET"),
        ({"TRACKSIDE_METRICS_TOKEN": "changeme-metrics-token"}, "TRACKSIDE_METRICS_TOKEN"),
    ],
)
def test_placeholder_secrets_are_refused(env, named):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**BASE, "TRACKSIDE_TRUST_ROLES_CLAIM": "1", **env})
    assert str(refused.value) == (
        f"{named} is a known placeholder value; set a long random one (e.g. `openssl rand -hex 32`)"
    )


def test_short_secrets_start_with_a_warning():
    short = Settings.from_env(
        {**BASE, "TRACKSIDE_JWT_SECRET": "k3y-of-20-characters", "TRACKSIDE_TRUST_ROLES_CLAIM": "0"}
    )
    assert short.warnings() == ["TRACKSIDE_JWT_SECRET is shorter than 32 bytes: use a long random value"]
    assert (
        Settings.from_env({**BASE, "TRACKSIDE_JWT_SECRET": LONG, "TRACKSIDE_TRUST_ROLES_CLAIM": "0"}).warnings() == []
    )


def test_a_jwt_secret_without_whoami_needs_the_roles_claim_choice():
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**BASE, "TRACKSIDE_JWT_SECRET": LONG})
    message = str(refused.value)
    assert message.startswith("TRACKSIDE_TRUST_ROLES_CLAIM must be set to 1 or 0: TRACKSIDE_JWT_SECRET is set without")
    assert "could make themselves a moderator" in message
    assert Settings.from_env(
        {**BASE, "TRACKSIDE_JWT_SECRET": LONG, "TRACKSIDE_TRUST_ROLES_CLAIM": "1"}
    ).trust_roles_claim
    believed = Settings.from_env({**BASE, "TRACKSIDE_JWT_SECRET": LONG, "TRACKSIDE_TRUST_ROLES_CLAIM": "0"})
    assert believed.trust_roles_claim is False
    assert believed.to_env()["TRACKSIDE_TRUST_ROLES_CLAIM"] == "0"  # the server's workers rebuild the same
    # With a who-am-I URL the site says who is a moderator: no choice to make.
    whoami = Settings.from_env({**BASE, "TRACKSIDE_JWT_SECRET": LONG, "TRACKSIDE_WHOAMI_URL": "http://api/me"})
    assert whoami.trust_roles_claim is None
    with pytest.raises(ConfigError, match="^TRACKSIDE_TRUST_ROLES_CLAIM: invalid value 'maybe'"):
        Settings.from_env({**BASE, "TRACKSIDE_JWT_SECRET": LONG, "TRACKSIDE_TRUST_ROLES_CLAIM": "maybe"})


def test_metrics_token_is_hidden_from_the_settings_summary():
    shown = repr(Settings(metrics_token="metrics-token-0123456789abcdef", admin_token=ADMIN))
    assert "metrics-token-0123456789abcdef" not in shown and ADMIN not in shown


# ----------------------------------------------------------------------------------------- roles claim


async def test_the_roles_claim_counts_only_when_believed(seeded):
    settings, _ = seeded
    for trust, expected in ((True, 200), (False, 403), (None, 403)):
        current = Settings(**{**_fields(settings), "trust_roles_claim": trust})
        async with run_sidecar(current) as (url, _):
            async with httpx.AsyncClient(base_url=url) as c:
                moderator = await c.get(API + "/site", headers=MOD)
                admin = await c.get(API + "/site", headers={"authorization": "Bearer " + ADMIN})
        assert (trust, moderator.status_code) == (trust, expected)
        assert admin.status_code == 200  # the admin token is no claim


# ----------------------------------------------------------------------------------------- sign-in limit


async def test_failed_sign_ins_are_limited_per_client_address(seeded):
    settings, _ = seeded
    limited = Settings(**{**_fields(settings), "sign_in_failures": 3, "trusted_proxies": _loopback()})
    one = {"x-forwarded-for": "203.0.113.7"}
    other = {"x-forwarded-for": "198.51.100.9"}
    async with run_sidecar(limited) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            bad = [
                (await c.get(API + "/site", headers={**one, "authorization": f"Bearer guess-{i}"})).status_code
                for i in range(3)
            ]
            blocked = await c.get(API + "/site", headers={**one, "authorization": "Bearer " + ADMIN})
            stats_path = await c.get("/api/admin/sitewide-stats", headers={**one, "authorization": "Bearer x"})
            health = await c.get("/_trackside/health", headers=one)
            page = await c.get("/_trackside/", headers=one)
            elsewhere = await c.get(API + "/site", headers={**other, "authorization": "Bearer " + ADMIN})
            wrong_elsewhere = await c.get(API + "/site", headers={**other, "authorization": "Bearer nope"})
            # The events API takes the admin token too: its refusals count, and it is closed alike.
            third = {"x-forwarded-for": "192.0.2.44"}
            event = {"name": "pageview", "url": "https://site.example/p/a1"}
            events = []
            for i in range(4):
                key = {**third, "authorization": f"Bearer k{i}"}
                sent = await c.post("/_trackside/api/event", json=event, headers=key)
                events.append(sent.status_code)
        held = list(app.own.failures)
    assert bad == [401, 401, 401]
    assert blocked.status_code == 429  # even the right token, until the minute is over
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert blocked.json() == {"detail": "too many failed sign-ins from this address; try again later"}
    assert stats_path.status_code == 429
    assert (health.status_code, page.status_code) == (200, 200)  # no token is checked there
    assert (elsewhere.status_code, wrong_elsewhere.status_code) == (200, 401)
    assert events == [401, 401, 401, 429]
    # Only keyed hashes are held, never an address.
    assert len(held) == 3 and all(isinstance(k, bytes) and len(k) == 16 for k in held)
    assert all(b"203.0.113.7" not in k and b"198.51.100.9" not in k for k in held)


# ----------------------------------------------------------------------------------------- metrics token


async def test_metrics_and_openapi_behind_the_metrics_token(seeded):
    settings, _ = seeded
    metrics_token = "scrape-token-0123456789abcdef0123"
    gated = Settings(**{**_fields(settings), "metrics_token": metrics_token})
    async with run_sidecar(gated) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            answers = {}
            for name, headers in (
                ("none", {}),
                ("wrong", {"authorization": "Bearer not-the-token"}),
                ("moderator", MOD),
                ("metrics", {"authorization": "Bearer " + metrics_token}),
                ("admin", {"authorization": "Bearer " + ADMIN}),
            ):
                answers[name] = (
                    (await c.get("/_trackside/metrics", headers=headers)).status_code,
                    (await c.get("/_trackside/api/openapi.json", headers=headers)).status_code,
                )
            refused = await c.get("/_trackside/metrics")
    assert answers == {
        "none": (401, 401),
        "wrong": (401, 401),
        "moderator": (401, 401),
        "metrics": (200, 200),
        "admin": (200, 200),
    }
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json() == {"detail": "the metrics token (TRACKSIDE_METRICS_TOKEN) is required as a Bearer token"}
    async with run_sidecar(settings) as (url, _):  # unset: open, as before
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/_trackside/metrics")).status_code == 200
            assert (await c.get("/_trackside/api/openapi.json")).status_code == 200


# ----------------------------------------------------------------------------------------- CSV and query input


async def test_csv_cells_that_would_be_formulas_are_neutralised(make_settings, upstream_url, database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    d0 = midnight(0)
    referrers = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "ok.com"]
    await write_batch(engine, Batch(events=[ev(d0 + i, f"v{i}", referrer=r) for i, r in enumerate(referrers)]))
    await engine.dispose()
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, admin_token=ADMIN, database_url=database_url
    )
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + ADMIN}) as c:
            r = await c.get(
                API + "/query",
                params={"metrics": "page_views", "dimensions": "referrer", "period": "today", "format": "csv"},
            )
    assert r.status_code == 200
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["referrer", "page_views"]
    assert sorted(rows[1:]) == sorted(
        [
            ['\'=HYPERLINK("http://evil.example","x")', "1"],
            ["'+1+1", "1"],
            ["'-2+3", "1"],
            ["'@SUM(A1)", "1"],
            ["'\tcmd", "1"],
            ["'\rcmd", "1"],
            ["ok.com", "1"],
        ]
    )


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=False)), min_size=1, max_size=5))
def test_csv_never_starts_a_string_cell_with_a_formula_character(cells):
    body = _csv_rows(["a"] * len(cells), [cells]).body.decode()
    got = list(csv.reader(io.StringIO(body, newline="")))[1]
    for cell, text in zip(cells, got, strict=True):
        if isinstance(cell, str):
            assert not text.startswith(("=", "+", "-", "@", "\t", "\r"))
            assert text == (("'" + cell) if cell.startswith(("=", "+", "-", "@", "\t", "\r")) else cell)
        else:
            assert text == str(cell)  # numbers stay numbers: -3 is -3


@pytest.mark.parametrize(
    "period",
    [
        "0000-01-01,0000-01-02",
        "99999-01-01,99999-01-02",
        "2026-13-01,2026-13-02",
        "0001-01-01,0001-01-01",
        "9999-12-31,9999-12-31",
        "1969-12-31,1970-01-02",
    ],
)
async def test_out_of_range_dates_are_400(seeded, period):
    settings, _ = seeded
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            got = await c.get(API + "/query", params={"metrics": "page_views", "period": period})
            first, last = period.split(",")
            body = {"metrics": ["page_views"], "period": {"from": first, "to": last}}
            posted = await c.post(API + "/query", json=body)
            popular = await c.get(API + "/popular", params={"period": period})
    for r in (got, posted, popular):
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith("period: ")


async def test_deeply_nested_json_is_400(seeded):
    settings, _ = seeded
    deep = b"[" * 100_000 + b"]" * 100_000
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            body = await c.post(API + "/query", content=deep, headers={"content-type": "application/json"})
            after = await c.get(API + "/query", params={"metrics": "page_views"})
    assert (body.status_code, body.json()) == (400, {"detail": "body: nested too deeply"})
    assert after.status_code == 200


def _fields(settings: Settings) -> dict:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def _loopback():
    import ipaddress

    return (ipaddress.ip_network("127.0.0.1/32"),)


assert SECRET  # the seeded settings sign with the stats tests' secret


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_PERIODS = st.one_of(
    _JSON,
    st.sampled_from(["today", "7d", "30d", "0000-01-01,2026-01-01", "2026-01-01,99999-01-01", "9999-12-31,9999-12-31"]),
    st.fixed_dictionaries({"from": st.dates().map(str) | _JSON, "to": st.dates().map(str) | _JSON}),
)


@hsettings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "metrics": _JSON | st.sampled_from(["page_views", "content_views,unique_viewers", ["errors"]]),
            "dimensions": _JSON | st.sampled_from(["day", "country", "content", ["day", "referrer"]]),
            "period": _PERIODS,
            "filters": _JSON,
            "limit": _JSON,
            "offset": _JSON,
            "order": _JSON,
        },
    )
)
def test_any_query_body_is_a_query_or_a_400(raw):
    from datetime import date

    from trackside.figures import DayFigures
    from trackside.stats.query import QueryError, parse_query, run_query

    try:
        q = parse_query(raw, date(2026, 12, 4))
        run_query(q, [DayFigures(q.first, rolled=False)])  # and what it asks can be answered
    except QueryError as exc:
        named = {"metrics", "dimensions", "period", "filters", "limit", "offset", "order", "body"}
        assert str(exc).split(":", 1)[0] in named | set(raw)  # names what is wrong
