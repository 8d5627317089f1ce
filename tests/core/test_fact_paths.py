"""The path a fact keeps: raw only where the route rules allow it, a redaction rule's own text, else
the label; wired into `derivation_of`; the per-label cap applied when reading."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from trackside.derive import derivation_of
from trackside.errors import ConfigError
from trackside.events import Event
from trackside.fact_paths import OTHER, FactPaths, cap_per_label, fact_path_of
from trackside.paths import Labeler
from trackside.settings import Settings

DAY = date(2026, 3, 2)
_seq = 0


def event(path: str, settings: Settings, **fields) -> Event:
    """A page view as capture makes it: labelled by the settings' route rules."""
    global _seq
    _seq += 1
    ts = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC).timestamp() + _seq
    label = Labeler(settings.label_rules).label(path)
    return Event(f"0000{_seq:04x}-0000-7000-8000-000000000000", ts, "page_view", "document", "GET", path, label,
                 200, "v" * 32, device="desktop", browser="Firefox", os="Linux", **fields)  # fmt: skip


SETTINGS = Settings.from_env({"TRACKSIDE_PATH_REDACT": "/reset-password/[token], /verify/[code]/[...rest]"})


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("/p/a1B2c3", "/p/a1B2c3"),  # a route rule, an id-like value: the raw path
        ("/u/ann/favourites", "/u/ann/favourites"),
        ("/b/my-first-post", "/b/my-first-post"),
        ("/api/post/17/like", "/api/post/17/like"),
        ("/p/" + "x" * 65, "/p/[post]"),  # longer than an id or a slug: the rule
        ("/p/a=b", "/p/[post]"),
        ("/u/ann;jsessionid=1", "/u/[user]"),
        ("/reset-password/s3cr3t-t0ken", "/reset-password/[token]"),  # redaction rules
        ("/verify/123456/then/more", "/verify/[code]/[...rest]"),
        ("/settings/profile", "/settings/profile"),  # no rule: the label (the generic shape)
        ("/orders/12345/receipt", "/orders/[id]/receipt"),
        ("/a/b/c/d/e", "/a/b/c"),
        ("/", "/"),
    ],
)
def test_fact_path(path, kept):
    assert fact_path_of(SETTINGS)(event(path, SETTINGS)) == kept


def test_content_rules_count_as_route_rules_and_redaction_comes_first():
    paths = FactPaths(["/p/[post]"], ["/p/secret-[x]"])  # a literal segment with brackets inside is literal
    settings = Settings(label_rules=(), content_rules={"artwork": ("/art/[id]",)}, path_redact=("/art/[id]/edit",))
    path_of = fact_path_of(settings)
    assert path_of(event("/art/a1", settings)) == "/art/a1"
    assert path_of(event("/art/a1/edit", settings)) == "/art/[id]/edit"
    assert paths.path_of(event("/p/q1", SETTINGS)) == "/p/q1"
    both = FactPaths(["/reset/[token]"], ["/reset/[token]"])
    assert both.path_of(event("/reset/abc", SETTINGS)) == "/reset/[token]"


def test_derivation_of_settings_keeps_safe_paths_and_names_sources():
    settings = SETTINGS
    derivation = derivation_of(settings)
    events = [
        event("/reset-password/tok3n", settings, referrer="l.facebook.com"),
        event("/p/a1", settings),
        event("/orders/98765/receipt", settings, utm_source="newsletter"),
    ]
    facts = derivation.visitor_day(DAY, "v" * 32, events)
    assert [(pv["path"], pv["label"], pv["source"]) for pv in facts.page_views] == [
        ("/reset-password/[token]", "/reset-password/tok3n", "Facebook"),
        ("/p/a1", "/p/[post]", None),
        ("/orders/[id]/receipt", "/orders/[id]/receipt", "newsletter"),
    ]
    [visit] = facts.visits
    assert (visit["entry_page"], visit["exit_page"], visit["source"]) == (
        "/reset-password/[token]",
        "/orders/[id]/receipt",
        "Facebook",
    )


def test_settings_parse_and_check_the_path_rules():
    assert SETTINGS.path_redact == ("/reset-password/[token]", "/verify/[code]/[...rest]")
    assert Settings().path_redact == () and Settings().fact_paths_per_label == 1000
    assert Settings.from_env({"TRACKSIDE_FACT_PATHS_PER_LABEL": "50"}).fact_paths_per_label == 50
    with pytest.raises(ConfigError, match="TRACKSIDE_PATH_REDACT: 'reset/\\[token\\]'"):
        Settings.from_env({"TRACKSIDE_PATH_REDACT": "reset/[token]"})
    with pytest.raises(ConfigError, match="TRACKSIDE_FACT_PATHS_PER_LABEL must be at least 1, got 0"):
        Settings.from_env({"TRACKSIDE_FACT_PATHS_PER_LABEL": "0"})
    assert Settings.from_env(SETTINGS.to_env()).path_redact == SETTINGS.path_redact


def test_cap_per_label_keeps_the_top_paths_and_folds_the_rest():
    rows = [
        ("/p/[post]", "/p/a", 5),
        ("/p/[post]", "/p/b", 9),
        ("/p/[post]", "/p/c", 1),
        ("/p/[post]", "/p/d", 5),
        ("/u/[user]", "/u/ann", 2),
    ]
    assert cap_per_label(rows, 3) == [
        ("/p/[post]", "/p/b", 9),
        ("/p/[post]", "/p/a", 5),
        ("/p/[post]", OTHER, 6),
        ("/u/[user]", "/u/ann", 2),
    ]
    assert cap_per_label(rows, 4) == [
        ("/p/[post]", "/p/b", 9),
        ("/p/[post]", "/p/a", 5),
        ("/p/[post]", "/p/d", 5),
        ("/p/[post]", "/p/c", 1),
        ("/u/[user]", "/u/ann", 2),
    ]
    assert cap_per_label(rows, 1) == [("/p/[post]", OTHER, 20), ("/u/[user]", "/u/ann", 2)]
    with pytest.raises(ValueError):
        cap_per_label(rows, 0)
