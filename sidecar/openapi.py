"""The OpenAPI document of everything Trackside answers: the site-compatible stats endpoints and
Trackside's own API. Written by hand, small enough to read."""

from __future__ import annotations

from typing import Any

from trackside.stats.item import DEFINITIONS as ITEM_DEFINITIONS
from trackside.stats.query import DEFINITIONS as QUERY_DEFINITIONS
from trackside.stats.query import DIMENSIONS, SITE_METRICS
from trackside.stats.site import DEFINITIONS as SITE_DEFINITIONS

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_ERRORS = {
    "400": {"description": "a bad parameter; `detail` names it"},
    "401": {"description": "no token, or one that does not verify"},
    "403": {"description": "neither the item's owner nor a moderator"},
    "404": {"description": "no such item"},
    "429": {
        "description": "too many failed sign-ins (401s) from this client address in a minute "
        "(TRACKSIDE_SIGN_IN_FAILURES); `Retry-After` says when to try again",
    },
}


def _json(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


def _refresh() -> dict[str, Any]:
    return {
        "name": "refresh",
        "in": "query",
        "schema": {"type": "boolean"},
        "description": "skip the cache (an answer that includes today is cached at most 5 s, so this is rarely "
        "needed; at most once per 10 s per caller and answer, beyond that what a plain read gets)",
    }


def _item(kind: str, field: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": f"{kind} stats over 30 UTC days: the owner or a moderator",
            "description": "; ".join(f"{k}: {v}" for k, v in ITEM_DEFINITIONS.items()),
            "security": _BEARER,
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": f"the public id as in the page path (or the site's `{field}`)",
                },
                _refresh(),
            ],
            "responses": {"200": _json(f"{field}, every figure with its _authenticated twin"), **_ERRORS},
        }
    }


def openapi_document() -> dict[str, Any]:
    period = {
        "name": "period",
        "in": "query",
        "schema": {"type": "string"},
        "description": "today, yesterday, 7d, 30d, or FROM,TO (YYYY-MM-DD, UTC days)",
    }
    csv = {
        "name": "format",
        "in": "query",
        "schema": {"enum": ["json", "csv"]},
        "description": "csv: a text cell starting with = + - @, tab or CR is prefixed with ' so that no spreadsheet "
        "runs it as a formula; numbers are written as numbers",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Trackside",
            "version": "1",
            "description": "Traffic statistics. Days are UTC. Bots are never part of any figure but bot_hits. "
            + "; ".join(f"{k}: {v}" for k, v in QUERY_DEFINITIONS.items()),
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/api/post/{id}/stats": _item("Artwork", "post_id"),
            "/api/blog-post/{id}/stats": _item("Blog post", "blog_post_id"),
            "/api/admin/sitewide-stats": {
                "get": {
                    "summary": "Sitewide stats over 30 UTC days: moderators",
                    "description": "; ".join(f"{k}: {v}" for k, v in SITE_DEFINITIONS.items()),
                    "security": _BEARER,
                    "parameters": [_refresh()],
                    "responses": {"200": _json("the `_30d` figures, series and breakdowns"), **_ERRORS},
                }
            },
            "/_trackside/api/v1/query": {
                "get": {
                    "summary": "Metrics by dimensions (moderators)",
                    "security": _BEARER,
                    "parameters": [
                        {
                            "name": "metrics",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "comma-separated: " + ", ".join(SITE_METRICS) + ", unique_viewers",
                        },
                        {
                            "name": "dimensions",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "comma-separated, at most one besides day: " + ", ".join(DIMENSIONS),
                        },
                        {
                            "name": "filters",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": 'JSON: [["is" | "is_not", dimension, [values]]]',
                        },
                        period,
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                        {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                        csv,
                        _refresh(),
                    ],
                    "responses": {
                        "200": _json("results: [{dimensions, metrics}], meta (computed_at: as of when today is)"),
                        **_ERRORS,
                    },
                },
                "post": {
                    "summary": "The same query as a JSON body",
                    "security": _BEARER,
                    "parameters": [_refresh()],
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {
                        "200": _json("results: [{dimensions, metrics}], meta (computed_at: as of when today is)"),
                        **_ERRORS,
                    },
                },
            },
            "/_trackside/api/v1/popular": {
                "get": {
                    "summary": "Most viewed content of a kind (moderators)",
                    "security": _BEARER,
                    "parameters": [
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                        period,
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                        csv,
                        _refresh(),
                    ],
                    "responses": {
                        "200": _json("items: [{id, views, unique_viewers, impressions, title, page}], computed_at"),
                        **_ERRORS,
                    },
                }
            },
            "/_trackside/api/v1/realtime": {
                "get": {
                    "summary": "Visitors in the last 5 minutes (moderators)",
                    "security": _BEARER,
                    "responses": {"200": _json("visitors, page_views, top_pages"), **_ERRORS},
                }
            },
            "/_trackside/api/v1/site": {
                "get": {
                    "summary": "The sitewide figures (moderators)",
                    "security": _BEARER,
                    "parameters": [_refresh()],
                    "responses": {"200": _json("as /api/admin/sitewide-stats"), **_ERRORS},
                }
            },
            "/_trackside/api/v1/items/{kind}/{id}": {
                "get": {
                    "summary": "One item's figures (moderators)",
                    "security": _BEARER,
                    "parameters": [
                        {"name": "kind", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                        _refresh(),
                    ],
                    "responses": {
                        "200": _json("as /api/post/{id}/stats, without the site's fields; title, page"),
                        **_ERRORS,
                    },
                }
            },
            "/_trackside/api/v1/kinds": {
                "get": {
                    "summary": "The content kinds of the settings: a popular panel each (moderators)",
                    "security": _BEARER,
                    "responses": {"200": _json("kinds: [{kind, name, page, title_url}]"), **_ERRORS},
                }
            },
            "/_trackside/api/event": _events_api(),
        },
    }


def _events_api() -> dict[str, Any]:
    body = {
        "type": "object",
        "required": ["name", "url"],
        "properties": {
            "name": {"type": "string", "description": "pageview, or a site event's name (1-32 characters)"},
            "url": {"type": "string", "description": "the page's URL or path; path and UTM parameters kept"},
            "domain": {"type": "string"},
            "referrer": {"type": ["string", "null"]},
            "props": {
                "type": "object",
                "properties": {
                    "item": {"type": "string", "description": "artwork:k3x9: the event is a look at that item"},
                    "view_type": {"type": "string", "description": "player, widget, ... (with item)"},
                    "player": {"type": "string", "description": "the player's id: the look's viewer"},
                    "event_id": {"type": "string", "description": "as the Idempotency-Key header"},
                },
            },
        },
    }
    header = {"in": "header", "schema": {"type": "string"}}
    return {
        "post": {
            "summary": "Report a server-side event (Plausible's Events API body): a write API key or the admin token",
            "security": _BEARER,
            "parameters": [
                {"name": "Idempotency-Key", **header, "description": "a retried call with the same key counts once"},
                {"name": "User-Agent", **header, "description": "the visitor's"},
                {"name": "X-Forwarded-For", **header, "description": "the visitor's address, leftmost"},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "202": _json("accepted (or ignored, with X-Trackside-Ignored: bot)"),
                "400": {"description": "a bad body or header; `field` names it"},
                "401": {"description": "no key, or an unknown or revoked one"},
                "403": {"description": "a read key"},
                "429": {"description": "beyond TRACKSIDE_EVENTS_API_RATE for this key; see Retry-After"},
                "503": {"description": "the buffer is full; see Retry-After"},
            },
        }
    }
