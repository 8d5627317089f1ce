"""The classifier, as a table: request line + headers + answer -> kind, nav, page path."""

from __future__ import annotations

import pytest

from trackside.classify import classify, next_data_page

DOC = {"sec-fetch-dest": "document", "accept": "text/html"}
HTML = "text/html; charset=utf-8"
JSON = "application/json"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "ctype", "is_api", "expected"),
    [
        pytest.param("GET", "/", DOC, 200, HTML, False, ("page_view", "document", "/"), id="document"),
        pytest.param("GET", "/p/a1", DOC, 304, "", False, ("page_view", "document", "/p/a1"), id="document-304"),
        pytest.param("HEAD", "/p/a1", DOC, 200, HTML, False, ("page_view", "document", "/p/a1"), id="document-head"),
        pytest.param(
            "GET", "/p/a1", {"accept": "text/html"}, 200, HTML, False, ("page_view", "document", "/p/a1"),
            id="old-browser-accept-html",
        ),
        pytest.param(
            "GET", "/p/a1", {"sec-fetch-dest": "iframe"}, 200, HTML, False, ("page_view", "document", "/p/a1"),
            id="iframe-embed",
        ),
        pytest.param("GET", "/x", DOC, 404, HTML, False, ("error", "document", "/x"), id="404-page"),
        pytest.param("GET", "/x", DOC, 302, HTML, False, (None, "document", "/x"), id="redirect-not-a-view"),
        pytest.param("GET", "/x", DOC, 200, JSON, False, (None, "document", "/x"), id="not-html"),
        pytest.param("POST", "/x", DOC, 200, HTML, False, (None, "document", "/x"), id="post-document"),
        pytest.param(
            "GET", "/x", {**DOC, "sec-purpose": "prefetch"}, 200, HTML, False, (None, "document", "/x"),
            id="document-prefetch",
        ),
        pytest.param(
            "GET", "/x", {**DOC, "purpose": "prefetch"}, 200, HTML, False, (None, "document", "/x"),
            id="document-purpose-prefetch",
        ),
        pytest.param(
            "GET", "/_next/data/b1/p/a1.json", {"x-nextjs-data": "1"}, 200, JSON, False,
            ("page_view", "data", "/p/a1"), id="next-data",
        ),
        pytest.param(
            "HEAD", "/_next/data/b1/p/a1.json", {"x-nextjs-data": "1"}, 200, JSON, False,
            ("page_view", "data", "/p/a1"), id="next-data-head-is-a-navigation",
        ),
        pytest.param(
            "GET", "/_next/data/b1/index.json", {}, 200, JSON, False, ("page_view", "data", "/"), id="next-data-index",
        ),
        pytest.param(
            "GET", "/_next/data/b1/p/a1.json", {"x-middleware-prefetch": "1"}, 200, JSON, False,
            (None, "data", "/p/a1"), id="next-data-prefetch",
        ),
        pytest.param(
            "GET", "/_next/data/b1/p/a1.json", {"purpose": "prefetch"}, 200, JSON, False,
            (None, "data", "/p/a1"), id="next-data-purpose-prefetch",
        ),
        pytest.param(
            "GET", "/_next/data/b1/p/a1.json", {}, 404, JSON, False, (None, "data", "/p/a1"),
            id="next-data-stale-build",
        ),
        pytest.param("GET", "/p/a1", {"rsc": "1"}, 200, "text/x-component", False, ("page_view", "rsc", "/p/a1"),
                     id="rsc"),
        pytest.param(
            "GET", "/p/a1", {"rsc": "1", "next-router-prefetch": "1"}, 200, "text/x-component", False,
            (None, "rsc", "/p/a1"), id="rsc-prefetch",
        ),
        pytest.param("GET", "/_next/static/chunks/main.js", {}, 200, "text/javascript", False,
                     (None, "other", "/_next/static/chunks/main.js"), id="asset"),
        pytest.param("GET", "/favicon.ico", {}, 200, "image/x-icon", False, (None, "other", "/favicon.ico"),
                     id="favicon"),
        pytest.param("GET", "/api/p/a1", {}, 200, JSON, True, ("api_call", "api", "/api/p/a1"), id="api"),
        pytest.param("POST", "/api/auth/register", {}, 201, JSON, True, ("api_call", "api", "/api/auth/register"),
                     id="api-post"),
        pytest.param("GET", "/api/p/a1", {}, 404, JSON, True, ("api_call", "api", "/api/p/a1"), id="api-404"),
        pytest.param("GET", "/api/x", {}, 503, JSON, True, ("error", "api", "/api/x"), id="api-5xx"),
        pytest.param("GET", "/p/a1", DOC, 500, HTML, False, ("error", "document", "/p/a1"), id="page-5xx"),
        pytest.param("GET", "/main.js", {}, 502, "", False, ("error", "other", "/main.js"), id="asset-5xx"),
    ],
)
def test_classify(method, path, headers, status, ctype, is_api, expected):
    c = classify(method, path, headers, status, ctype, is_api=is_api)
    assert (c.kind, c.nav, c.path) == expected


def test_error_types():
    assert classify("GET", "/", {}, 500, "", is_api=False).error_type == "upstream_5xx"
    assert classify("GET", "/", DOC, 404, HTML, is_api=False).error_type == "not_found"
    c = classify("GET", "/", DOC, 502, "", is_api=False, sidecar_error="upstream_unreachable")
    assert (c.kind, c.error_type) == ("error", "upstream_unreachable")
    c = classify("GET", "/", DOC, 504, "", is_api=False, sidecar_error="upstream_timeout")
    assert (c.kind, c.error_type) == ("error", "upstream_timeout")


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/_next/data/abc/index.json", "/"),
        ("/_next/data/abc/p/a1.json", "/p/a1"),
        ("/_next/data/abc/blog/index.json", "/blog"),
        ("/_next/data/abc", None),
        ("/_next/data/abc/p/a1", None),
    ],
)
def test_next_data_page(path, page):
    assert next_data_page(path) == page
