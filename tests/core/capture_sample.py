"""Records a varied set of answered requests through `Capturer` (documents, API reads, data and RSC
navigations, prefetches, assets, bots, a flood, hints, do-not-track, UTM, errors) and prints what it
made as JSON: run by `test_capture_fast.py` once on the pure-Python modules and once on a compiled
build (`bench/build_compiled.py`), with PYTHONPATH naming either."""

import json
import sys

from trackside.buffer import EventBuffer
from trackside.capture import Answer, Capturer
from trackside.events import FIELDS
from trackside.metrics import Metrics
from trackside.settings import Settings


class Salts:
    def salt_for(self, day):
        return b"k" * 32


CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
metrics = Metrics()
buffer = EventBuffer(100_000, metrics)
capturer = Capturer(Settings(honor_dnt=True, flood_per_minute=50), buffer, Salts(), metrics)
capturer.waiting = buffer
cases = [
    ("GET", "/", b"", [(b"accept", b"text/html"), (b"sec-fetch-dest", b"document")], 200, "text/html", []),
    (
        "GET",
        "/p/abc123",
        b"utm_source=news&utm_medium=mail&x=1",
        [(b"accept", b"text/html"), (b"referer", b"https://www.Example.org/a")],
        200,
        "text/html; charset=utf-8",
        [(b"x-trackside-author", b"u9"), (b"x-trackside-title", b"Sunrise")],
    ),
    ("GET", "/_next/data/b1/p/abc123.json", b"", [(b"x-nextjs-data", b"1")], 200, "application/json", []),
    ("GET", "/b/xyz", b"", [(b"rsc", b"1")], 200, "text/x-component", []),
    ("GET", "/p/abc123", b"", [(b"accept", b"text/html"), (b"purpose", b"prefetch")], 200, "text/html", []),
    (
        "GET",
        "/api/p/abc123",
        b"",
        [(b"accept", b"application/json")],
        200,
        "application/json",
        [(b"x-trackside-item-id", b"77"), (b"x-trackside-user", b"u1")],
    ),
    (
        "GET",
        "/api/feed",
        b"",
        [(b"accept", b"application/json")],
        200,
        "application/json",
        [(b"x-trackside-items", b"post:a1,post:a2;search")],
    ),
    ("POST", "/api/auth/register", b"", [], 201, "application/json", []),
    ("GET", "/api/broken", b"", [], 502, "text/plain", [(b"x-trackside-error", b"upstream_5xx")]),
    ("GET", "/missing", b"", [(b"accept", b"text/html")], 404, "text/html", []),
    ("GET", "/_next/static/chunk.js", b"", [], 200, "application/javascript", []),
    ("GET", "/", b"", [(b"accept", b"text/html"), (b"dnt", b"1")], 200, "text/html", []),
    (
        "GET",
        "/u/someone",
        b"",
        [(b"accept", b"text/html"), (b"user-agent", b"Googlebot/2.1 (+http://www.google.com/bot.html)")],
        200,
        "text/html",
        [],
    ),
    ("GET", "/p/\x00nul", b"", [(b"accept", b"text/html")], 200, "text/html", []),
]
n = 0
for round_ in range(3):
    for i, (method, path, query, extra, status, ctype, hints) in enumerate(cases):
        n += 1
        ua = IPHONE if i % 2 else CHROME
        headers = [(b"host", b"example.com"), (b"user-agent", ua.encode()), *extra]
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query,
            "headers": headers,
            "client": (f"81.2.{i}.{round_}", 5000),
        }
        answer = Answer()
        answer.read_start(status, [(b"content-type", ctype.encode()), *hints])
        capturer.answered(scope, 1_760_000_000.0 + n, answer, 0.0123)
for _ in range(60):  # one visitor's flood
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/x",
        "query_string": b"",
        "client": ("81.9.9.9", 1),
        "headers": [(b"user-agent", CHROME.encode())],
    }
    answer = Answer()
    answer.read_start(200, [(b"content-type", b"application/json")])
    capturer.answered(scope, 1_760_000_100.0, answer, 0.001)
for request in buffer.take_waiting():
    capturer.record(*request)
batch = buffer.take(100_000)
rows = [[getattr(e, f) for f in FIELDS if f != "id"] for e in batch.events]  # ids are random per process
json.dump(
    {
        "rows": rows,
        "bots": sorted([str(k), v] for k, v in batch.bots.items()),
        "aliases": sorted(map(str, batch.aliases.items())),
        "titles": sorted(map(str, batch.titles.items())),
        "metrics": dict(metrics.counts),
        "compiled": __import__("trackside.capture").capture.__file__.endswith(".so"),
    },
    sys.stdout,
    sort_keys=True,
)
