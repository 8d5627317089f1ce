"""Header rules of a reverse proxy: hop-by-hop stripping and X-Forwarded-*."""

from __future__ import annotations

from collections.abc import Iterable

# RFC 9110 section 7.6.1 and the usual extras; never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Set by us from the socket; a client's own values are believed only from a trusted proxy.
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded"})


_NONE: frozenset[bytes] = frozenset()


def connection_named(headers: Iterable[tuple[bytes, bytes]], *, lowered: bool = False) -> frozenset[bytes]:
    """Header names listed in `Connection`: hop-by-hop too, whatever they are. `lowered`: the
    names are lower case already (an ASGI scope's, our upstream client's), so none is lowered again."""
    named: set[bytes] | None = None
    for name, value in headers:
        if (name if lowered else name.lower()) == b"connection":
            if named is None:
                named = set()
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(named) if named else _NONE


def response_headers(raw: Iterable[tuple[bytes, bytes]], *, lowered: bool = False) -> list[tuple[bytes, bytes]]:
    """The headers of an answer without the hop-by-hop ones (`lowered`: as `connection_named`)."""
    if not isinstance(raw, list):
        raw = list(raw)
    named = connection_named(raw, lowered=lowered)
    drop = HOP_BY_HOP | named if named else HOP_BY_HOP
    if lowered:
        return [(name, value) for name, value in raw if name not in drop]
    return [(name, value) for name, value in raw if name.lower() not in drop]
