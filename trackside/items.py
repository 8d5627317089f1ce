"""Content items named in text: `artwork:a1,blog_post:p9` (an upstream hint or a beacon's `i`).

One syntax for both sources, checked the same way, so neither can store an item the tables
cannot hold (ids are bounded like the ids capture takes from paths)."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

MAX_ITEMS = 50
MAX_ID = 128
# Impressions say where the item was shown; a widget view is a look from another site.
LISTING = "listing"
SEARCH = "search"
WIDGET = "widget"
IMPRESSION_TYPES = frozenset({LISTING, SEARCH})

# An id is what one path segment can hold: printable ASCII without separators of this syntax.
_ID = re.compile(r"[A-Za-z0-9._~%!$&'()*+=@-]{1,128}")


class ItemError(ValueError):
    """A malformed item list; the message names the problem."""


def parse_items(items: str | Iterable[object], kinds: Collection[str], limit: int = MAX_ITEMS) -> list[tuple[str, str]]:
    """`"artwork:a1, artwork:b2"` or `["artwork:a1"]` -> `[("artwork", "a1"), ...]`, in order, once each.

    Items of a kind the site does not know are skipped (they count nowhere); a malformed one
    raises `ItemError`."""
    if isinstance(items, str):
        parts: Iterable[object] = items.split(",")
    else:
        parts = items
    found: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for n, part in enumerate(parts):
        if n >= limit:
            raise ItemError(f"more than {limit} items")
        if not isinstance(part, str):
            raise ItemError("items must be strings like artwork:a1")
        if not part.strip():
            continue  # a trailing comma
        kind, sep, item = part.strip().partition(":")
        if not sep or not kind or not _ID.fullmatch(item):
            raise ItemError(f"item {part[:40]!r} should look like artwork:a1")
        if kind not in kinds or (kind, item) in seen:
            continue
        seen.add((kind, item))
        found.append((kind, item))
    return found


def parse_items_hint(value: str, kinds: Collection[str]) -> tuple[list[tuple[str, str]], str]:
    """The `X-Trackside-Items` hint: `artwork:a1,artwork:b2` with an optional `;search` (default listing)."""
    items, _, view = value.partition(";")
    view = view.strip().lower() or LISTING
    if view not in IMPRESSION_TYPES:
        raise ItemError(f"view type {view[:20]!r} is not listing or search")
    return parse_items(items, kinds), view
