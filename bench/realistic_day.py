"""A site's traffic around one moment of a UTC day, as the sidecar would capture it: time-ordered events of
visits that start at a steady rate, each visit a few page views of one visitor (a document load, then Next.js
client navigations) with the API calls every page makes, feed impressions, errors, signed-in users and their
uploads; some visitors came earlier that day too.

`SiteTraffic.window(start, seconds, rate)` returns the events of the visitor-days the window touches that
happened *before* it (to store first: what the database holds when the window's batches arrive) and the
window's events cut into batches of `batch_seconds` (the flusher's), each in time order.

`SiteTraffic.day(day, count, end)` returns a whole day of about `count` events (visits spread over the
day by a daily curve; used by bench/facts_bench.py).

Used by bench/derive_bench.py and bench/facts_bench.py. Deterministic per seed (event ids aside: `new_event_id`,
as capture makes them).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from trackside.events import (
    API_CALL,
    ERROR,
    IMPRESSION,
    NAV_API,
    NAV_BEACON,
    NAV_DATA,
    NAV_DOCUMENT,
    NAV_RSC,
    PAGE_VIEW,
    Event,
    new_event_id,
)

# The mix of bench/stats_bench.py (its tables, copied: that script imports modules that come and go).
DEVICES = (
    ("desktop", "Chrome", "Windows", 30), ("mobile", "Mobile Safari", "iOS", 25),
    ("mobile", "Chrome Mobile", "Android", 22), ("desktop", "Safari", "Mac OS X", 10),
    ("desktop", "Firefox", "Linux", 5), ("desktop", "Edge", "Windows", 5), ("tablet", "Mobile Safari", "iOS", 3),
)  # fmt: skip
COUNTRIES = (
    ("US", 28), ("DE", 8), ("GB", 7), ("JP", 7), ("FR", 5), ("BR", 5), ("CA", 4), ("KR", 3), ("IT", 3), ("ES", 3),
    ("NL", 2), ("PL", 2), ("SE", 2), ("AU", 2), ("MX", 2), ("IN", 2), ("RU", 2), ("TW", 1), ("FI", 1), ("CH", 1),
    (None, 10),
)  # fmt: skip
REFERRERS = ("google.com", "reddit.com", "t.co", "bsky.app", "news.ycombinator.com", "discord.com",
             "duckduckgo.com", "mastodon.social", "youtube.com", "bing.com")  # fmt: skip
PAGES = (("/", "/"), ("/new", "/new"), ("/search", "/search"), ("/about", "/about"),
         ("/hashtags/pixelart", "/hashtags/[tag]"), ("/hashtags/gif", "/hashtags/[tag]"), ("/u/alice", "/u/[user]"),
         ("/u/bob/likes", "/u/[user]/[tab]"))  # fmt: skip
APIS = (("/api/post/recent", "/api/post/recent"), ("/api/user/alice", "/api/user/[user]"),
        ("/api/notifications", "/api"), ("/api/hashtags", "/api"),
        ("/api/post/x1/reactions", "/api/post/[post]/[action]"))  # fmt: skip


def _cum(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


LOOK_BACK_SECONDS = 1200.0  # visits started this long before the window may still be going on in it
SIGNED_IN = 0.08  # share of visitors signed in


@dataclass(slots=True)
class Visitor:
    id: str
    user: str | None
    device: tuple[str, str, str]
    country: str | None


class SiteTraffic:
    def __init__(self, seed: int = 1, artworks: int = 20_000, blog_posts: int = 500, users: int = 60_000) -> None:
        self.rng = random.Random(seed)
        self.artworks = [f"art{i:05d}" for i in range(artworks)]
        self.blog_posts = [f"post-{i:03d}" for i in range(blog_posts)]
        self.art_cum = _cum([1.0 / (i + 1) for i in range(artworks)])  # Zipf popularity, s = 1
        self.blog_cum = _cum([1.0 / (i + 1) for i in range(blog_posts)])
        self.art_author = [f"u{(i * 7919) % users}" for i in range(artworks)]
        self.blog_author = [f"u{(j * 13) % users}" for j in range(blog_posts)]
        self.users = users
        self.devices = [d[:3] for d in DEVICES]
        self.device_cum = _cum([d[3] for d in DEVICES])
        self.countries = [c[0] for c in COUNTRIES]
        self.country_cum = _cum([c[1] for c in COUNTRIES])
        # Events per visit, measured on a sample: sets how many visits a second make the asked rate.
        sample = random.Random(seed + 1)
        probe = Visitor("0" * 32, "u1", self.devices[0], None)
        self.events_per_visit = sum(len(self._visit(probe, 0.0, sample)) for _ in range(3000)) / 3000

    def _visitor(self) -> Visitor:
        r = self.rng
        user = f"u{r.randrange(self.users)}" if r.random() < SIGNED_IN else None
        device = self.devices[r.choices(range(len(self.devices)), cum_weights=self.device_cum)[0]]
        country = r.choices(self.countries, cum_weights=self.country_cum)[0]
        return Visitor(f"{r.getrandbits(128):032x}", user, device, country)

    def _pages(self, r: random.Random) -> list[float]:
        """Offsets of a visit's page views from its start: a third bounce, the rest read 2 + ~3 pages, 40 s apart."""
        n = 1 if r.random() < 0.35 else min(2 + int(-3.0 * math.log(1.0 - r.random())), 30)
        out, t = [0.0], 0.0
        for _ in range(n - 1):
            t += 3.0 + r.expovariate(1 / 37.0)
            out.append(t)
        return out

    def _visit(self, v: Visitor, start: float, r: random.Random, pages: list[float] | None = None) -> list[Event]:
        out: list[Event] = []
        device, browser, os_name = v.device
        common: dict[str, Any] = {"visitor": v.id, "device": device, "browser": browser, "os": os_name,
                                  "country": v.country}  # fmt: skip
        for i, offset in enumerate(pages if pages is not None else self._pages(r)):
            ts = start + offset
            nav = NAV_DOCUMENT if i == 0 or r.random() < 0.3 else (NAV_DATA if r.random() < 0.6 else NAV_RSC)
            x = r.random()
            item: tuple[str, str, str] | None = None
            if x < 0.55:
                a = r.choices(range(len(self.artworks)), cum_weights=self.art_cum)[0]
                item = ("artwork", self.artworks[a], self.art_author[a])
                path, label = "/p/" + item[1], "/p/[post]"
            elif x < 0.58:
                b = r.choices(range(len(self.blog_posts)), cum_weights=self.blog_cum)[0]
                item = ("blog_post", self.blog_posts[b], self.blog_author[b])
                path, label = "/b/" + item[1], "/b/[blog]"
            else:
                path, label = PAGES[r.randrange(len(PAGES))]
            extra: dict[str, Any] = {}
            if i == 0:
                y = r.random()
                if y < 0.25:
                    extra["referrer"] = REFERRERS[r.randrange(len(REFERRERS))]
                elif y < 0.27:
                    extra.update(utm_source="newsletter", utm_medium="email", utm_campaign="weekly")
            user = v.user if v.user and r.random() < 0.3 else None  # a page view carries a user only sometimes
            if r.random() < 0.02:  # a dead link
                out.append(Event(id=new_event_id(ts), ts=ts, kind=ERROR, nav=NAV_DOCUMENT, method="GET",
                                 path="/missing", label="/missing", status=404, user_id=user,
                                 error_type="not_found", **common, **extra))  # fmt: skip
                continue
            if item is not None:
                extra.update(content_kind=item[0], content_id=item[1])
            out.append(Event(id=new_event_id(ts), ts=ts, kind=PAGE_VIEW, nav=nav, method="GET", path=path,
                             label=label, status=200, user_id=user, duration_ms=round(r.uniform(5, 120), 3),
                             **common, **extra))  # fmt: skip
            # The page's API calls, within two seconds of it; on an item's page one reads the item.
            for k in range(min(int(r.expovariate(1 / 2.5)), 8)):
                at = ts + 0.05 + r.random() * 2.0
                api: dict[str, Any] = {}
                if k == 0 and item is not None:
                    route = "/api/p/[post]" if item[0] == "artwork" else "/api/blog-post/[blog]"
                    api_path = route.replace("[post]", item[1]).replace("[blog]", item[1])
                    api.update(content_kind=item[0], content_id=item[1], author_id=item[2])
                else:
                    api_path, route = APIS[r.randrange(len(APIS))]
                if r.random() < 0.01:
                    out.append(Event(id=new_event_id(at), ts=at, kind=ERROR, nav=NAV_API, method="GET",
                                     path="/api/boom", label="/api", status=503, user_id=v.user,
                                     error_type="upstream_5xx", **common))  # fmt: skip
                    continue
                out.append(Event(id=new_event_id(at), ts=at, kind=API_CALL, nav=NAV_API, method="GET", path=api_path,
                                 label=route, status=200, user_id=v.user, duration_ms=round(r.uniform(2, 80), 3),
                                 **common, **api))  # fmt: skip
            if v.user and r.random() < 0.01:
                at = ts + 2.5
                out.append(Event(id=new_event_id(at), ts=at, kind=API_CALL, nav=NAV_API, method="POST",
                                 path="/api/post/upload", label="/api/post/upload", status=200, user_id=v.user,
                                 event_name="upload", **common))  # fmt: skip
            elif not v.user and r.random() < 0.003:
                at = ts + 2.5
                out.append(Event(id=new_event_id(at), ts=at, kind=API_CALL, nav=NAV_API, method="POST",
                                 path="/api/auth/register", label="/api/auth/register", status=200,
                                 event_name="signup", **common))  # fmt: skip
            if item is None and r.random() < 0.4:  # a listing: the feed's impression beacons
                for _ in range(1 + r.randrange(3)):
                    at = ts + 1.0 + r.random() * 2.0
                    a = r.choices(range(len(self.artworks)), cum_weights=self.art_cum)[0]
                    out.append(Event(id=new_event_id(at), ts=at, kind=IMPRESSION, nav=NAV_BEACON, method="POST",
                                     path=path, label=label, status=204, user_id=user, content_kind="artwork",
                                     content_id=self.artworks[a], view_type="listing", **common))  # fmt: skip
        return out

    def window(
        self, start: float, seconds: float, rate: float, batch_seconds: float = 1.0
    ) -> tuple[list[Event], list[list[Event]]]:
        """(events before `start` of the visitor-days the window touches, the window's batches)."""
        r = self.rng
        day_start = start - start % 86400
        visits_per_second = rate / self.events_per_visit
        earlier: list[Event] = []
        inside: list[Event] = []
        t = start - LOOK_BACK_SECONDS
        end = start + seconds
        while True:
            t += r.expovariate(visits_per_second)
            if t >= end:
                break
            pages = self._pages(r)
            if t + pages[-1] + 3.0 < start:
                continue  # over before the window: touches nothing in it
            v = self._visitor()
            events = [e for e in self._visit(v, t, r, pages) if e.ts - day_start < 86400]
            # A third of the visitors came earlier that day (once or twice, at least 35 minutes before).
            room = t - 2100.0 - day_start
            if room > 0 and r.random() < 0.33:
                for _ in range(1 + (r.random() < 0.3)):
                    earlier += self._visit(v, day_start + r.random() * room, r)
            for e in events:
                (earlier if e.ts < start else inside).append(e)
        inside = [e for e in inside if e.ts < end]
        inside.sort(key=lambda e: e.ts)
        earlier.sort(key=lambda e: e.ts)
        batches: list[list[Event]] = [[] for _ in range(max(1, math.ceil(seconds / batch_seconds)))]
        for e in inside:
            batches[min(int((e.ts - start) / batch_seconds), len(batches) - 1)].append(e)
        return earlier, batches

    def day(self, day_start: float, count: int, end: float | None = None) -> list[Event]:
        """About `count` events of one UTC day from `day_start` (before `end`, if given), in time order."""
        r = self.rng
        stop = min(day_start + 86400.0, end or day_start + 86400.0)
        out: list[Event] = []
        # Arrival times follow a daily curve: quiet at night (UTC 4h), busiest twelve hours later.
        while len(out) < count:
            t = r.random() * 86400.0
            if day_start + t >= stop or r.random() >= 0.55 + 0.45 * math.sin((t / 86400.0 - 0.4167) * 2 * math.pi):
                continue
            v = self._visitor()
            out += [e for e in self._visit(v, day_start + t, r) if e.ts < stop]
            if r.random() < 0.15:  # the same visitor again later that day
                again = day_start + t + 2100.0 + r.random() * 20000.0
                out += [e for e in self._visit(v, again, r) if e.ts < stop]
        out.sort(key=lambda e: e.ts)
        return out
