from __future__ import annotations

import pytest

from trackside.paths import ContentMatcher, EventRules, Labeler, generic_label
from trackside.settings import DEFAULT_CONTENT_RULES, DEFAULT_LABEL_RULES


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/p/Xa9", "/p/[post]"),
        ("/p/Xa9/", "/p/[post]"),
        ("/b/abc", "/b/[blog]"),
        ("/blog/12", "/blog/[blog]"),
        ("/u/k3/posts", "/u/[user]/[tab]"),
        ("/hashtags/cats", "/hashtags/[tag]"),
        ("/api/p/Xa9", "/api/p/[post]"),
        ("/api/v1/p/Xa9", "/api/v1/p/[post]"),
        ("/api/post/recent", "/api/post/recent"),
        ("/api/post/12/view", "/api/post/[post]/[action]"),
        ("/api/player/p/Xa9", "/api/player/p/[post]"),
        ("/", "/"),
        ("/about", "/about"),
        ("/a/b/c/d/e", "/a/b/c"),
        ("/files/123/x", "/files/[id]/x"),
        ("/x/550e8400-e29b-41d4-a716-446655440000", "/x/[id]"),
    ],
)
def test_labels(path, label):
    assert Labeler(DEFAULT_LABEL_RULES).label(path) == label


def test_generic_label_is_bounded():
    assert len(generic_label("/" + "a" * 1000)) <= 128
    assert generic_label("/" + "q" * 60) == "/[id]"


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/p/a1", ("artwork", "a1")),
        ("/api/p/a1", ("artwork", "a1")),
        ("/b/post1", ("blog_post", "post1")),
        ("/blog/7", ("blog_post", "7")),
        ("/api/blog-post/b/post1", ("blog_post", "post1")),
        ("/p/a1/edit", None),
        ("/api/post/12/stats", None),
        ("/u/a1", None),
    ],
)
def test_content(path, found):
    assert ContentMatcher(DEFAULT_CONTENT_RULES).match(path) == found


def test_event_rules():
    rules = EventRules([("POST", "/api/auth/register", "signup"), ("POST", "/api/post/upload", "upload")])
    assert rules.match("POST", "/api/auth/register") == "signup"
    assert rules.match("GET", "/api/auth/register") is None
    assert rules.match("POST", "/api/post/upload") == "upload"
