"""A dotted IPv4 address in its plain form, read without `ipaddress`: the common case on
capture's path, at about a tenth of the cost (`ipaddress.ip_address` builds an object and parses
each octet in Python). Anything else (IPv6, leading zeros, spaces, other digits) gets None, and
the caller takes `ipaddress`' general path, so the answers are `ipaddress`' own."""

from __future__ import annotations

# Every octet as `ipaddress` accepts it (0-255, no leading zero, ASCII digits only).
_OCTETS = {str(i): i for i in range(256)}


def plain_ipv4(address: str) -> tuple[int, int, int, int] | None:
    """The four octets of `a.b.c.d` written as `str(ipaddress.ip_address(...))` would write it."""
    parts = address.split(".")
    if len(parts) != 4:
        return None
    octet = _OCTETS.get
    a, b, c, d = octet(parts[0]), octet(parts[1]), octet(parts[2]), octet(parts[3])
    if a is None or b is None or c is None or d is None:
        return None
    return a, b, c, d


def as_int(octets: tuple[int, int, int, int]) -> int:
    a, b, c, d = octets
    return (a << 24) | (b << 16) | (c << 8) | d
