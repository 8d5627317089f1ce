"""What a request is: a page view, an API call, an error, or nothing worth a row.

A pure function of the request line, a few headers and the response status, table-tested in
`tests/core/test_classify.py`."""

from __future__ import annotations

from typing import NamedTuple

from trackside import events as ev

# Prefetch headers: browsers (`Purpose`, `Sec-Purpose`), the Next.js pages router
# (`x-middleware-prefetch`) and the app router (`Next-Router-Prefetch`). A prefetch is never a view.
_PREFETCH_HEADERS = ("purpose", "sec-purpose", "next-router-prefetch", "x-middleware-prefetch")

_ASSET_PREFIXES = ("/_next/static/", "/_next/image", "/_next/webpack-hmr", "/static/", "/__nextjs")
_ASSET_EXTENSIONS = frozenset(
    "js mjs css map png jpg jpeg gif webp avif svg ico bmp woff woff2 ttf otf eot mp4 webm mp3 wav ogg "
    "txt xml webmanifest wasm pdf zip gz".split()
)


class Classification(NamedTuple):
    """`kind` None means: keep no row (prefetch, asset, redirect...). `reason` says why, for metrics.

    A named tuple: immutable like the frozen dataclass it was, at half the cost to make (one is made
    for every request)."""

    kind: str | None
    nav: str
    path: str  # the page's path: for `/_next/data/<build>/p/a1.json` that is `/p/a1`
    error_type: str | None = None
    reason: str = ""


def is_prefetch(headers: dict[str, str]) -> bool:
    for name in _PREFETCH_HEADERS:
        value = headers.get(name)
        if value and ("prefetch" in value.lower() or value == "1"):
            return True
    return False


def is_asset(path: str) -> bool:
    if path.startswith(_ASSET_PREFIXES) or path == "/favicon.ico":
        return True
    last = path.rsplit("/", 1)[-1]
    dot = last.rfind(".")
    return dot > 0 and last[dot + 1 :].lower() in _ASSET_EXTENSIONS


def next_data_page(path: str) -> str | None:
    """`/_next/data/<buildId>/p/a1.json` -> `/p/a1`; `.../index.json` -> `/`."""
    rest = path[len("/_next/data/") :]
    _, sep, page = rest.partition("/")
    if not sep or not page.endswith(".json"):
        return None
    page = page[: -len(".json")]
    if page == "index":
        return "/"
    if page.endswith("/index"):
        page = page[: -len("/index")]
    return "/" + page


def classify(
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    content_type: str,
    *,
    is_api: bool,
    sidecar_error: str | None = None,
) -> Classification:
    """Classify one answered request.

    headers: lower-case names of the request headers that matter (see `capture.WANTED_HEADERS`).
    is_api: the request was routed to the API upstream (or, in-process, the path is an API path).
    sidecar_error: the sidecar made the answer, and this is why: `upstream_unreachable`,
    `upstream_timeout`... or `refused` (it refused the request itself: 400, 413, 414, 431, 501).
    Either way an error of that type, never `upstream_5xx`."""
    nav = ev.NAV_OTHER
    page_path = path
    data_page = next_data_page(path) if path.startswith("/_next/data/") else None
    if data_page is not None:
        nav, page_path = ev.NAV_DATA, data_page
    elif headers.get("rsc") == "1":
        nav = ev.NAV_RSC
    elif is_api:
        nav = ev.NAV_API
    elif _wants_document(headers):
        nav = ev.NAV_DOCUMENT

    if status >= 500 or sidecar_error:
        return Classification(ev.ERROR, nav, page_path, sidecar_error or "upstream_5xx")
    if nav in (ev.NAV_DATA, ev.NAV_RSC, ev.NAV_DOCUMENT) and is_prefetch(headers):
        return Classification(None, nav, page_path, reason="prefetch")
    if nav == ev.NAV_API:
        return Classification(ev.API_CALL, nav, page_path)
    if nav == ev.NAV_OTHER or method not in ("GET", "HEAD"):
        return Classification(None, nav, page_path, reason="asset" if is_asset(path) else "other")
    if nav == ev.NAV_DOCUMENT and status == 404:
        return Classification(ev.ERROR, nav, page_path, "not_found")
    if not (200 <= status < 300 or status == 304):
        return Classification(None, nav, page_path, reason="status")
    if nav == ev.NAV_DOCUMENT and status != 304 and "html" not in content_type:
        return Classification(None, nav, page_path, reason="not_html")
    return Classification(ev.PAGE_VIEW, nav, page_path)


def _wants_document(headers: dict[str, str]) -> bool:
    dest = headers.get("sec-fetch-dest")
    if dest:
        return dest in ("document", "iframe")
    # Browsers too old for Fetch Metadata, and plain clients: a document is what asks for HTML.
    return "text/html" in headers.get("accept", "")
