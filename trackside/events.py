"""The event: what one request (or beacon) becomes, as it travels from capture to storage."""

from __future__ import annotations

import operator
import os
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

# Event kinds. One request is one event with one kind; `nav` says how it arrived.
PAGE_VIEW = "page_view"
API_CALL = "api_call"
ERROR = "error"
IMPRESSION = "impression"
# What the web snippet measured of a page view once it was hidden: `status` holds the deepest scroll
# (0-100 %), `duration_ms` the milliseconds the page was visible. Derivation folds it into the
# visitor's page view of the same path (`trackside.derive`); it is never a figure of its own.
ENGAGEMENT = "engagement"

# How a request arrived: a document load, a Next.js data fetch (pages router), an RSC fetch
# (app router), an API call, a beacon from the web snippet, or anything else.
NAV_DOCUMENT = "document"
NAV_DATA = "data"
NAV_RSC = "rsc"
NAV_API = "api"
NAV_BEACON = "beacon"
NAV_OTHER = "other"


def new_event_id(now: float | None = None) -> str:
    """A time-ordered UUID (version 7 layout): 48 bits of Unix milliseconds, then 74 bits that are
    unique per process: 42 random bits drawn at start-up and a 32-bit counter. Two processes
    collide only if they draw the same 42 bits and reach the same count in the same millisecond.

    Made once at capture, so a retried batch carries the same ids and is stored once."""
    global _counter
    ms = int((time.time() if now is None else now) * 1000) & 0xFFFFFFFFFFFF
    _counter = (_counter + 1) & 0xFFFFFFFF
    # %-formatting: about half the cost of the equivalent f-string with format specs here.
    return "%08x-%04x-%s%08x" % (ms >> 16, ms & 0xFFFF, _PROCESS_ID, _counter)  # noqa: UP031


def _process_id() -> str:
    # The version nibble, 12 random bits; the variant (10xx) with 2 random bits, 12 more; then 16
    # random bits, to which the caller appends the counter's 8 hex digits.
    r = int.from_bytes(os.urandom(6), "big") >> 6  # 42 bits
    a, v, b, c = r >> 30, (r >> 28) & 0x3, (r >> 16) & 0xFFF, r & 0xFFFF
    return f"7{a:03x}-{0x8 | v:x}{b:03x}-{c:04x}"


_PROCESS_ID = _process_id()
_counter = int.from_bytes(os.urandom(4), "big")


def reseed_event_ids() -> None:
    """A forked process must not continue its parent's sequence."""
    global _PROCESS_ID, _counter
    _PROCESS_ID = _process_id()
    _counter = int.from_bytes(os.urandom(4), "big")


os.register_at_fork(after_in_child=reseed_event_ids)


@dataclass(slots=True)
class Event:
    """One stored event. No raw IP and no raw token ever sits here: only the salted visitor hash."""

    id: str
    ts: float  # Unix seconds, the sidecar's clock when the request arrived
    kind: str
    nav: str
    method: str
    path: str
    label: str
    status: int
    visitor: str
    device: str = "other"
    browser: str = "Other"
    os: str = "Other"
    user_id: str | None = None
    author_id: str | None = None
    content_kind: str | None = None
    content_id: str | None = None
    view_type: str | None = None
    country: str | None = None
    referrer: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    error_type: str | None = None
    event_name: str | None = None  # signup, upload, ... from route rules or an upstream hint
    duration_ms: float = 0.0
    unverified: bool = False  # a beacon without a valid page token

    @property
    def day(self) -> date:
        return datetime.fromtimestamp(self.ts, UTC).date()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(**{k: data[k] for k in FIELDS if k in data})


FIELDS = tuple(f.name for f in fields(Event))
# An event as a plain tuple in field order: the wire form of a batch. `asdict` costs ~20 µs an
# event (it deep-copies); this costs well under one.
as_row = operator.attrgetter(*FIELDS)


@dataclass(slots=True)
class BotHit:
    """A bot request: kept only as a counter per day, bot and route label, never as a row."""

    ts: float
    bot: str
    label: str
