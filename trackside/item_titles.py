"""Item titles: what the dashboard shows for an item instead of its bare id, and where its page is.

A title comes from the upstream's `X-Trackside-Title` hint on a response that shows the item (read
at capture, never from the response body), or from a field of the item's API answer, asked at read
time (`sidecar.titles`). Either way it is cleaned here: plain text, one line, at most `MAX_TITLE`
characters. It is only ever shown as text."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from urllib.parse import quote, unquote

MAX_TITLE = 200
# Control characters (C0, DEL, C1) and the line and paragraph separators: a title is one line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")


def clean_title(value: object) -> str | None:
    """A title as stored: text, control characters and runs of white space made single spaces,
    trimmed, cut to `MAX_TITLE` characters; None for anything else or nothing left."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = _SPACES.sub(" ", _CONTROL.sub(" ", str(value))).strip()
    return text[:MAX_TITLE].rstrip() or None


def title_from_hint(raw: str) -> str | None:
    """`X-Trackside-Title` as capture reads it (header bytes as latin-1): bytes that are UTF-8 are
    read as UTF-8, others as latin-1 (what Starlette and Django send for `é`); and it may be
    percent-encoded (`encodeURIComponent`), as frameworks that allow only ASCII in headers need.
    A `%` that starts no escape stays as it is."""
    data = raw.encode("latin-1", "replace")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = raw
    if "%" in text:
        text = unquote(text, errors="replace")
    return clean_title(text)


def page_pattern(patterns: Collection[str]) -> str | None:
    """The item's own page from its content rules: the first pattern that names only the id and
    is not under `/api` (`/p/[id]` of `/p/[id]|/api/p/[id]`), as a template with `{id}`; None when
    every pattern is an API path."""
    for pattern in patterns:
        if pattern.count("[") == 1 and "[id]" in pattern and pattern != "/api" and not pattern.startswith("/api/"):
            return pattern.replace("[id]", "{id}")
    return None


def item_page(kind: str, item: str, content_rules: Mapping[str, Collection[str]]) -> str | None:
    """The item's page path (`/p/a1`), its id percent-encoded as one path segment."""
    template = page_pattern(content_rules.get(kind, ()))
    return template.replace("{id}", quote(item, safe="")) if template is not None else None


def kind_name(kind: str) -> str:
    """`blog_post` -> `Blog post`."""
    words = kind.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else kind


def field_of(answer: object, path: str) -> object:
    """`title` or `data.title` of a JSON answer; None where the path leads nowhere."""
    for part in path.split("."):
        if not isinstance(answer, dict):
            return None
        answer = answer.get(part)
    return answer
