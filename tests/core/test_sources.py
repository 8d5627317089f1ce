"""Referrer domains named as sources from the vendored list; else utm_source, else the domain."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from trackside.enrich.sources import DIRECT, known_source, shown, source_of


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        ("google.com", "Google"),
        ("google.co.uk", "Google"),
        ("google.com.br", "Google"),
        ("google.de", "Google"),
        ("news.google.com", "Google"),
        ("gemini.google.com", "Gemini"),  # the longest listed suffix wins
        ("bing.com", "Bing"),
        ("cn.bing.com", "Bing"),
        ("duckduckgo.com", "DuckDuckGo"),
        ("search.yahoo.co.jp", "Yahoo! Japan"),
        ("yandex.ru", "Yandex"),
        ("facebook.com", "Facebook"),
        ("m.facebook.com", "Facebook"),
        ("l.facebook.com", "Facebook"),
        ("reddit.com", "Reddit"),
        ("old.reddit.com", "Reddit"),
        ("t.co", "Twitter"),
        ("x.com", "Twitter"),
        ("news.ycombinator.com", "Hacker News"),
        ("github.com", "GitHub"),
        ("gist.github.com", "GitHub"),
        ("youtube.com", "YouTube"),
        ("m.youtube.com", "YouTube"),
        ("youtu.be", "YouTube"),
        ("chatgpt.com", "ChatGPT"),
        ("bsky.app", "Bluesky"),
        ("someone.itch.io", "itch.io"),
        ("GOOGLE.COM.", "Google"),
    ],
)
def test_known_domains_and_their_subdomains(domain, name):
    assert known_source(domain) == name


@pytest.mark.parametrize(
    "domain", ["example.org", "mygoogle.com", "google.evil.com", "ycombinator.com", "co", "com", "evilt.co"]
)
def test_unknown_domains(domain):
    assert known_source(domain) is None


def test_source_order_known_then_utm_then_domain_then_direct():
    assert source_of("m.facebook.com", "newsletter") == "Facebook"
    assert source_of("blog.example.org", "newsletter") == "newsletter"
    assert source_of("blog.example.org", None) == "blog.example.org"
    assert source_of(None, "Newsletter May") == "Newsletter May"  # as given
    assert source_of(None, None) is None
    assert source_of("", "") is None
    assert shown(None) == DIRECT == "Direct / None"
    assert shown("Google") == "Google"


def test_sources_fit_the_column():
    assert source_of(None, "u" * 100) == "u" * 64
    assert source_of("a" * 70 + ".example", None) == "a" * 64


def test_data_file_states_origin_and_licence_and_names_fit():
    raw = json.loads(resources.files("trackside.enrich").joinpath("data", "referrer_sources.json").read_text())
    assert "matomo-org/searchengine-and-social-list" in raw["about"]
    assert "CC0-1.0" in raw["about"] and "public domain" in raw["about"]
    names = [name for section in ("search", "social", "ai", "additions") for name in raw[section]]
    assert all(len(n) <= 64 for n in names)
    hosts = [h for section in ("search", "social", "ai", "additions") for hs in raw[section].values() for h in hs]
    assert not [h for h in hosts if h.startswith("www.") or "/" in h or h != h.lower()]
