"""Checks of a request's target and `Host` before it is routed: what a strict reverse proxy refuses.

Each returns the refusal as `"<status> <message>"`, or None when the request may go on."""

from __future__ import annotations

from collections.abc import Iterable

# Percent-encoded separators: `%2F` is a slash to a server that decodes before it routes (or to
# a cache in front) and a plain character to one that routes on the raw path, so the same
# request would be two different paths to two readers. Here the route, the upstream's own router
# and capture must all read one path, so such a path is refused, as Apache (`AllowEncodedSlashes
# Off`) and Undertow do by default. The route is then chosen on the decoded path, which has the
# same segments as the raw one. `%5C` and a bare backslash are refused for the same reason: some
# servers (IIS, and URL parsers following WHATWG) take a backslash for a slash. `%00` is refused
# as nginx does: a NUL in a path ends it early for C code, and PostgreSQL cannot store it.
_AMBIGUOUS = (b"%2f", b"%5c", b"\\", b"%00")


def target_problem(raw_path: bytes, query: bytes, max_target_bytes: int) -> str | None:
    """An over-long request target (414), or a path that reads differently decoded and raw (400)."""
    size = len(raw_path) + (len(query) + 1 if query else 0)
    if size > max_target_bytes:
        return f"414 request target longer than {max_target_bytes} bytes"
    if b"%" in raw_path or b"\\" in raw_path:
        lowered = raw_path.lower()
        for bad in _AMBIGUOUS:
            if bad in lowered:
                if bad == b"%00":
                    return "400 NUL (%00) in path"
                return "400 encoded slash or backslash in path"
    return None


def host_problem(hosts: int, http_version: str, connection_named: Iterable[bytes]) -> str | None:
    """`hosts`: how many `Host` fields the request has. RFC 9112 section 3.2: an HTTP/1.1 request
    with none, or with more than one, is a 400 (two readers may each pick another one: the proxy
    routes on one while the upstream builds links with the other). HTTP/1.0 had no `Host` yet."""
    if hosts > 1:
        return "400 repeated Host header"
    if hosts == 0 and http_version != "1.0":
        return "400 missing Host header"
    # `Connection: host` would have the proxy drop `Host` as hop-by-hop and send the request on
    # with another one: the name of the site is no hop-by-hop field, so the request is refused.
    if b"host" in connection_named:
        return "400 Host named in Connection"
    return None
