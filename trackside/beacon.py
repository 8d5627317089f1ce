"""Beacons: what the browser reports that no proxy can see, checked before anything is built from it.

A beacon is a small JSON object (or the same fields in a query string, for the image fallback):

- `t`: `pageview`, `impression` or `widget`;
- `p`: the page's path (`location.pathname + location.search`): starts with `/`, printable ASCII,
  at most 512 characters; of its query only UTM parameters are kept;
- `r`: the referrer: `document.referrer` for a page view, the embedding page for a widget;
- `i`: items, `"artwork:a1,artwork:b2"` or `["artwork:a1", ...]` (impressions and widgets);
- `v`: where impressions were shown: `listing` (default) or `search`;
- `k`: the page token the sidecar gave the page;
- `s`, `m` (`t` = `engagement`, with `p`): the page view's deepest scroll in percent (0-100) and the
  milliseconds it was visible, sent once per page view when it is hidden or left.

`POST /api/track/page-view` takes `{"path", "referrer", "token"}` (the route the original review
proposed) and means the same as `{"t": "pageview", "p", "r", "k"}`.

Anything else is refused with a `BeaconError` naming the problem; nothing malformed reaches an event."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import orjson

from trackside.items import IMPRESSION_TYPES, LISTING, ItemError, parse_items
from trackside.paths import MAX_PATH

MAX_BEACON_BYTES = 4096
MAX_REFERRER = 2048
MAX_FIELDS = 16

PAGEVIEW = "pageview"
IMPRESSION = "impression"
WIDGET = "widget"
ENGAGEMENT = "engagement"
TYPES = frozenset({PAGEVIEW, IMPRESSION, WIDGET, ENGAGEMENT})
# A page visible longer than a day is a tab left open: its visible time is capped there.
MAX_VISIBLE_MS = 86_400_000

# sendBeacon sends a string as text/plain (no CORS preflight), a keepalive fetch may say JSON.
_BODY_TYPES = frozenset({"", "text/plain", "application/json"})


class BeaconError(ValueError):
    """A refused beacon: `status` is the HTTP answer, the message names the problem."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Beacon:
    type: str
    path: str  # without its query: "/" for a widget, which is not a page of this site
    query: str  # the page's query string, read for UTM parameters only
    referrer: str | None
    items: tuple[tuple[str, str], ...]
    view_type: str | None  # listing / search for impressions, widget for widgets, None for page views
    token: str | None
    scroll_depth: int | None = None  # engagement: 0-100
    visible_ms: int | None = None  # engagement


def decode_body(body: bytes, content_type: str) -> dict[str, object]:
    if len(body) > MAX_BEACON_BYTES:
        raise BeaconError(f"beacon larger than {MAX_BEACON_BYTES} bytes", 413)
    media = content_type.partition(";")[0].strip().lower()
    if media not in _BODY_TYPES:
        raise BeaconError("beacon body must be JSON (text/plain or application/json)", 415)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BeaconError("beacon body is not JSON") from None
    if not isinstance(data, dict):
        raise BeaconError("beacon body must be a JSON object")
    return data


def query_fields(query: str) -> dict[str, object]:
    """The image fallback's fields: `?t=pageview&p=%2Fabout&k=...`."""
    if len(query) > MAX_BEACON_BYTES:
        raise BeaconError(f"beacon larger than {MAX_BEACON_BYTES} bytes", 413)
    try:
        pairs = parse_qsl(query, keep_blank_values=False, max_num_fields=MAX_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise BeaconError("beacon query is not a valid query string") from None
    return dict(pairs)


def parse_beacon(fields: Mapping[str, object], kinds: Collection[str]) -> Beacon:
    """The compact beacon's fields; `kinds` are the site's content kinds (items of others are skipped)."""
    kind = fields.get("t")
    if not isinstance(kind, str) or kind not in TYPES:
        raise BeaconError("t must be pageview, impression, widget or engagement")
    token = _text(fields, "k", MAX_REFERRER)
    referrer = _text(fields, "r", MAX_REFERRER)
    if kind == WIDGET:
        # A widget is shown on another site: its page is not one of ours, so `p` is not read.
        return Beacon(WIDGET, "/", "", referrer, _items(fields, kinds), WIDGET, token)
    path, query = check_path(fields.get("p"), "p")
    if kind == PAGEVIEW:
        return Beacon(PAGEVIEW, path, query, referrer, (), None, token)
    if kind == ENGAGEMENT:
        depth = _whole(fields, "s", 100)
        visible = min(_whole(fields, "m", None), MAX_VISIBLE_MS)
        return Beacon(ENGAGEMENT, path, query, None, (), None, token, depth, visible)
    view = fields.get("v")
    if view is None:
        view = LISTING
    if not isinstance(view, str) or view not in IMPRESSION_TYPES:
        raise BeaconError("v must be listing or search")
    return Beacon(IMPRESSION, path, query, referrer, _items(fields, kinds), view, token)


def parse_page_view(fields: Mapping[str, object]) -> Beacon:
    """`POST /api/track/page-view` with `{"path": "/b/x", "referrer": "https://...", "token": "..."}`."""
    path, query = check_path(fields.get("path"), "path")
    referrer = _text(fields, "referrer", MAX_REFERRER)
    return Beacon(PAGEVIEW, path, query, referrer, (), None, _text(fields, "token", MAX_REFERRER))


def check_path(value: object, name: str) -> tuple[str, str]:
    """(path, query) of a page path as the browser has it; raises naming what is wrong."""
    if not isinstance(value, str):
        raise BeaconError(f"{name} must be a string")
    if not value.startswith("/") or value.startswith("//"):
        raise BeaconError(f"{name} must be a path starting with / (no scheme, no host)")
    if len(value) > MAX_PATH:
        raise BeaconError(f"{name} is longer than {MAX_PATH} characters")
    if not all("!" <= ch <= "~" for ch in value):
        # location.pathname is percent-encoded: spaces, controls and non-ASCII never appear in it.
        raise BeaconError(f"{name} must be printable ASCII without spaces (percent-encoded)")
    path, _, query = value.partition("#")[0].partition("?")
    return path, query


def item_path(kind: str, item: str, content_rules: Mapping[str, Collection[str]]) -> str:
    """The item's own page (`/p/a1`), from the first rule of its kind that names only the id; else `/`."""
    for pattern in content_rules.get(kind, ()):
        if pattern.count("[") == 1 and "[id]" in pattern:
            return pattern.replace("[id]", item)
    return "/"


def origin_allowed(origin: str | None, own_host: str | None, allowed: Collection[str]) -> bool:
    """Whether a beacon from `origin` (`https://host[:port]`) may count. No list means any origin;
    the site's own origin is always allowed."""
    if not allowed:
        return True
    if not origin:
        return False
    origin = origin.strip().lower().rstrip("/")
    try:
        host = urlsplit(origin).netloc
    except ValueError:
        return False
    if own_host and host == own_host.strip().lower():
        return True
    return origin in allowed


def _text(fields: Mapping[str, object], name: str, limit: int) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BeaconError(f"{name} must be a string")
    if len(value) > limit:
        raise BeaconError(f"{name} is longer than {limit} characters")
    return value


def _whole(fields: Mapping[str, object], name: str, most: int | None) -> int:
    """A whole number field, from JSON or the image fallback's query string."""
    value = fields.get(name)
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (most is not None and value > most):
        bound = f"0 to {most}" if most is not None else "0 or more"
        raise BeaconError(f"{name} must be a whole number from {bound}")
    return value


def _items(fields: Mapping[str, object], kinds: Collection[str]) -> tuple[tuple[str, str], ...]:
    value = fields.get("i")
    if not isinstance(value, str | list) or not value:
        raise BeaconError("i must name items, like artwork:a1,artwork:b2")
    try:
        return tuple(parse_items(value, kinds))
    except ItemError as exc:
        raise BeaconError(f"i: {exc}") from None
