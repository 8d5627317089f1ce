"""Goals: what counts as a conversion. A goal is a site event by name (`signup`, `upload`, a rule's
or an `X-Trackside-Event` hint's name) or a page pattern (`/p/*`: a page view whose path matches).

Interface used by the query engine; defined in settings and stored in the database (see README)."""

from __future__ import annotations

from dataclasses import dataclass

EVENT = "event"
PAGE = "page"


@dataclass(frozen=True, slots=True)
class Goal:
    name: str  # as shown and as `event:goal` answers it
    kind: str  # EVENT or PAGE
    match: str  # the event name, or the page pattern (`*` any run of characters but `/`, `**` any)
