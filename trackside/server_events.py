"""Server-side events: the body of Plausible's Events API turned into the same event records capture
makes, for what never passes the proxy (a view on a player reported over MQTT, a signup finished on
another host, a purchase confirmed by a webhook).

- `name: "pageview"`: a page view of `url`'s path, labelled by the route rules (and a look when the
  path is an item's, as a proxied navigation would be).
- any other name: a site event of that name.
- `props.item` (`"artwork:k3x9"`), optionally with `props.view_type` (`"player"`, `"widget"`, ...):
  a look at that item, whatever the name.

The visitor is what the caller says it is: the leftmost `X-Forwarded-For` address and the
`User-Agent` it forwards (only authenticated callers get here), hashed with the day's salt like
any visitor; or, with `props.player`, that player (one look per item, window and player). Events
carry `nav = "server"`: never absorbed as a snippet beacon's echo, never counted as API calls.

An `Idempotency-Key` (or `props.event_id`) gives the event an id derived from (API key, idempotency
key), so a retried call makes the same id and the insert-or-ignore on ids stores it once."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from trackside import events as ev
from trackside.capture import Capturer, EventSink
from trackside.enrich.bots import bot_name
from trackside.enrich.referrer import referrer_domain, utm
from trackside.enrich.user_agent import parse_user_agent
from trackside.enrich.visitor import visitor_hash
from trackside.items import ItemError, parse_items
from trackside.paths import MAX_PATH

NAV_SERVER = "server"
PAGEVIEW = "pageview"
PLAYER = "player"
MAX_BODY_BYTES = 8 * 1024
MAX_NAME = 32
MAX_URL = 2048
MAX_KEY = 128
MAX_PROPS = 30

_NAME = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,31}")
_VIEW_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,15}")
_PRINTABLE = re.compile(r"[\x21-\x7e]{1,128}")


class BodyError(ValueError):
    """A bad events-API body: `field` names what is wrong (400, or 413 for the size)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


@dataclass(frozen=True, slots=True)
class ServerEvent:
    name: str
    path: str
    query: str
    host: str | None
    referrer: str | None
    item: tuple[str, str] | None
    view_type: str | None
    player: str | None
    event_id: str | None


def parse_body(raw: bytes, kinds: frozenset[str]) -> ServerEvent:
    """Checks one events-API body; raises `BodyError` naming the first bad field."""
    if len(raw) > MAX_BODY_BYTES:
        raise BodyError("body", f"larger than {MAX_BODY_BYTES} bytes", 413)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BodyError("body", "not JSON") from None
    except RecursionError:  # thousands of nested arrays (not a ValueError): no event is that deep
        raise BodyError("body", "nested too deeply") from None
    if not isinstance(body, dict):
        raise BodyError("body", "a JSON object is expected")
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BodyError("name", f"a string of 1 to {MAX_NAME} printable ASCII characters is required")
    url = body.get("url")
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise BodyError("url", f"a URL (or a path starting with /) of at most {MAX_URL} characters is required")
    path, query, host = _split_url(url)
    domain = body.get("domain")
    if domain is not None and (not isinstance(domain, str) or len(domain) > 255):
        raise BodyError("domain", "a string of at most 255 characters")
    referrer = body.get("referrer")
    if referrer is not None and (not isinstance(referrer, str) or len(referrer) > MAX_URL):
        raise BodyError("referrer", f"a string of at most {MAX_URL} characters")
    props = body.get("props")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise BodyError("props", "an object is expected")
    if len(props) > MAX_PROPS:
        raise BodyError("props", f"at most {MAX_PROPS} properties")
    item = _item(props.get("item"), kinds)
    view_type = props.get("view_type")
    if view_type is not None:
        if not isinstance(view_type, str) or not _VIEW_TYPE.fullmatch(view_type):
            raise BodyError("props.view_type", "a lower-case word of at most 16 characters, e.g. player")
        if item is None:
            raise BodyError("props.view_type", "needs props.item, the item that was viewed")
    player = _token(props.get("player"), "props.player")
    event_id = _token(props.get("event_id"), "props.event_id")
    return ServerEvent(name, path, query, host or domain or None, referrer, item, view_type, player, event_id)


@lru_cache(maxsize=4096)
def _split_url(url: str) -> tuple[str, str, str | None]:
    """(path, query, host) of an event's URL; a caller sends the same few URLs over and over."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        raise BodyError("url", "not a URL") from None
    if parts.scheme and parts.scheme not in ("http", "https"):
        raise BodyError("url", "http or https only")
    if parts.scheme and not parts.netloc:
        raise BodyError("url", "an absolute URL needs a host")
    path = unquote(parts.path or "/")
    if not path.startswith("/") or len(path) > MAX_PATH or not path.isprintable():
        raise BodyError("url", f"its path must start with / and be at most {MAX_PATH} printable characters")
    return path, parts.query, host


def _item(value: Any, kinds: frozenset[str]) -> tuple[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BodyError("props.item", "a string like artwork:k3x9")
    try:
        found = parse_items(value, kinds, limit=1)
    except ItemError as exc:
        raise BodyError("props.item", str(exc)) from None
    if not found:
        kind = value.partition(":")[0]
        raise BodyError("props.item", f"unknown content kind {kind[:32]!r}; known: {', '.join(sorted(kinds))}")
    return found[0]


def _token(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
        raise BodyError(field, "1 to 128 printable ASCII characters without spaces")
    return value


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _PRINTABLE.fullmatch(value):
        raise BodyError("Idempotency-Key", "1 to 128 printable ASCII characters without spaces")
    return value


def derived_event_id(key_id: str, idempotency_key: str) -> str:
    """The same (API key, idempotency key) always makes the same event id (a UUID-shaped digest):
    a retried call is stored once. Another key's same idempotency key is another event."""
    h = hashlib.sha256(f"trackside-event\x00{key_id}\x00{idempotency_key}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{h[16:20]}-{h[20:32]}"


class ServerEvents:
    """Records checked events-API bodies through the capture pipeline's own sink and enrichment."""

    def __init__(self, capturer: Capturer, sink: EventSink) -> None:
        self.capturer = capturer
        self.sink = sink
        self.settings = capturer.settings
        self.kinds = frozenset(self.settings.content_rules)

    def record(
        self,
        event: ServerEvent,
        *,
        key_id: str,
        idempotency_key: str | None,
        user_agent: str,
        forwarded_for: str | None,
        peer: str | None,
        started: float,
    ) -> str | None:
        """Puts the event in the buffer. Returns why nothing was stored (`excluded`, `bot`), else None."""
        c = self.capturer
        label = c.labeler.label(event.path)
        player = event.player
        client = _leftmost(forwarded_for)
        ip = client or peer or ""  # a malformed header is the caller's 400, bot or not
        # Internal traffic (`TRACKSIDE_EXCLUDE_ADDRESSES`) by the client address the caller forwards,
        # never by the caller's own (a server on the internal network sending for everyone).
        if client and c.excluded_address(client):
            c.metrics.inc("events_excluded")
            return "excluded"
        if player is None and event.view_type != PLAYER:
            bot = bot_name(user_agent, self.settings.bot_allowlist)
            if bot is not None:
                c.sink.put_bot(ev.BotHit(started, bot, label))
                return "bot"
        salt = c.salt_at(started)
        if player is not None:
            visitor = visitor_hash(salt, self.settings.site, "player:" + player, "")
        else:
            visitor = visitor_hash(salt, self.settings.site, ip, user_agent)
        info = parse_user_agent(user_agent, self.settings.players)
        device = PLAYER if player is not None or event.view_type == PLAYER else info.device
        is_pageview = event.name == PAGEVIEW
        content = event.item
        if content is None and is_pageview:
            content = c.content.match(event.path)
        source = medium = campaign = None
        if event.query:
            source, medium, campaign = utm(event.query)
        key = idempotency_key or event.event_id
        self.sink.put(
            ev.Event(
                id=derived_event_id(key_id, key) if key else ev.new_event_id(started),
                ts=started,
                kind=ev.PAGE_VIEW if is_pageview else ev.API_CALL,
                nav=NAV_SERVER,
                method="POST",
                path=event.path,
                label=label,
                status=202,
                visitor=visitor,
                device=device,
                browser=info.browser,
                os=info.os,
                content_kind=content[0] if content else None,
                content_id=content[1] if content else None,
                view_type=event.view_type if content else None,
                country=c.countries.country(ip, None) if player is None else None,
                referrer=referrer_domain(event.referrer, event.host),
                utm_source=source,
                utm_medium=medium,
                utm_campaign=campaign,
                event_name=None if is_pageview else event.name[:MAX_NAME],
            )
        )
        return None


def _leftmost(forwarded_for: str | None) -> str | None:
    """The visitor's address as the caller forwards it: the first `X-Forwarded-For` entry, in its
    canonical form. (Not memoised: no raw address is kept once its event is made.)"""
    if not forwarded_for:
        return None
    first = forwarded_for.split(",", 1)[0].strip()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, first))
        except OSError:
            continue
    raise BodyError("X-Forwarded-For", "the first entry must be an IP address")
