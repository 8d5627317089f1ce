"""The client's IP: the socket peer, or `X-Forwarded-For` only when the peer is a trusted proxy
(and the same for the site's host name, from `X-Forwarded-Host`).

Walks `X-Forwarded-For` from the right, skipping trusted hops, as uvicorn's ProxyHeadersMiddleware
does: the first untrusted address is the client. Anything left of it was written by the client
and is never believed."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from trackside.enrich.ipv4 import as_int, plain_ipv4
from trackside.settings import IPNetwork


class ClientIP:
    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self._trusted = tuple(trusted)
        # The IPv4 networks as (address, mask) integers: a plain dotted client address (behind a
        # load balancer, every request's) is checked against them without `ipaddress`, which took
        # 8-9 us of a request (py-spy, 20,000 rotating addresses; README, "Speed"). An IPv4 address
        # is never in an IPv6 network for `ipaddress` either.
        self._v4 = tuple((int(net.network_address), int(net.netmask)) for net in self._trusted if net.version == 4)
        # Only the trusted proxies' own addresses are remembered: a cache of every address asked
        # about would keep clients' raw IPs in memory long after their requests ended.
        self._known_proxies: set[str] = set()

    def is_trusted(self, host: str) -> bool:
        if not self._trusted:
            return False
        if host in self._known_proxies:
            return True
        octets = plain_ipv4(host)
        if octets is not None:
            number = as_int(octets)
            if any(number & mask == network for network, mask in self._v4):
                if len(self._known_proxies) < 4096:
                    self._known_proxies.add(host)
                return True
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if any(addr in net for net in self._trusted):
            if len(self._known_proxies) < 4096:
                self._known_proxies.add(host)
            return True
        return False

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        if peer is None:
            return ""
        if not forwarded_for or not self.is_trusted(peer):
            return peer
        if "," not in forwarded_for:
            # One hop, the usual case behind one load balancer: the client, trusted or not (a
            # trusted one is the leftmost entry, which is itself).
            hop = forwarded_for.strip()
            return _valid_or_empty(hop) if hop else peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return _valid_or_empty(hop)
        return _valid_or_empty(hops[0]) if hops else peer

    def own_host(self, peer: str | None, host: str | None, forwarded_host: str | None) -> str | None:
        """The site's host name as the client asked for it: `X-Forwarded-Host` only from a trusted
        proxy (its last entry, the one that proxy wrote), else `Host`. A client's own
        `X-Forwarded-Host` would let any page pass for the site's own (beacon origins, referrers)."""
        if forwarded_host and peer is not None and self.is_trusted(peer):
            last = forwarded_host.rsplit(",", 1)[-1].strip()
            if last:
                return last
        return host


def _valid_or_empty(host: str) -> str:
    # A forged or broken entry ("unknown", "<script>") is no address at all.
    if plain_ipv4(host) is not None:
        return host  # already as `ipaddress` would write it
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


def is_private(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return True
    return addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved or addr.is_multicast
