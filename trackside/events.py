"""The event: what one request (or beacon) becomes, as it travels from capture to storage."""

from __future__ import annotations

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

# How a request arrived: a document load, a Next.js data fetch (pages router), an RSC fetch
# (app router), an API call, a beacon from the web snippet, or anything else.
NAV_DOCUMENT = "document"
NAV_DATA = "data"
NAV_RSC = "rsc"
NAV_API = "api"
NAV_BEACON = "beacon"
NAV_OTHER = "other"


def new_event_id(now: float | None = None) -> str:
    """A time-ordered UUID (version 7 layout): 48 bits of Unix milliseconds, then randomness.

    Made once at capture, so a retried batch carries the same ids and is stored once."""
    ms = int((time.time() if now is None else now) * 1000) & 0xFFFFFFFFFFFF
    r = os.urandom(10).hex()  # 80 random bits, of which 74 are used
    variant = "89ab"[int(r[3], 16) & 3]
    t = f"{ms:012x}"
    return f"{t[:8]}-{t[8:]}-7{r[:3]}-{variant}{r[4:7]}-{r[7:19]}"


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
        return cls(**{k: data[k] for k in _FIELDS if k in data})


_FIELDS = tuple(f.name for f in fields(Event))


@dataclass(slots=True)
class BotHit:
    """A bot request: kept only as a counter per day, bot and route label, never as a row."""

    ts: float
    bot: str
    label: str
