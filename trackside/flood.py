"""The flood limits: requests a minute beyond which a client is no person, whatever it says.

Two counts, each for the current UTC minute: one per visitor (address and user agent, the
visitor id), and one per client address. The second exists because a script that sends a new
user agent string with each request is a new visitor each time and never reaches the first.

No raw address is held: the per-address count is kept under a keyed BLAKE2b hash whose random
key lives in this process only and is replaced every minute, with the counts. An IPv6 client is
counted by its /64, the block one subscriber gets (rotating within it is free).

Memory is bounded: at most `MAX_KEYS` visitors and as many addresses a minute; one not yet seen
when a table is full is not counted that minute (a botnet of that size is beyond this limit's
reach anyway, and the ones already counted stay counted)."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from typing import Any

from trackside.enrich.ipv4 import plain_ipv4

MAX_KEYS = 100_000


class FloodLimit:
    __slots__ = ("per_visitor", "per_address", "_minute", "_visitors", "_blocks", "_addresses", "_key")

    def __init__(self, per_visitor: int, per_address: int) -> None:
        self.per_visitor = per_visitor
        self.per_address = per_address  # 0: no per-address limit
        self._minute = -1
        self._visitors: dict[str, int] = {}
        # Hash of an address -> hash of the block it is counted under (its /64 for IPv6, itself
        # for IPv4), or None for one never limited: an address is parsed once a minute, not at
        # each request.
        self._blocks: dict[bytes, bytes | None] = {}
        self._addresses: dict[bytes, int] = {}  # hash of a block -> its requests this minute
        self._key = b""

    def over(self, visitor: str, address: str, started: float) -> bool:
        """Counts one request; whether it is beyond either limit in its minute."""
        minute = int(started // 60)
        if minute > self._minute:
            # A late record of the previous minute (the flusher may see requests slightly out of
            # order) counts in this one, rather than reset the counts back and forth.
            self._minute = minute
            self._visitors = {}
            self._blocks = {}
            self._addresses = {}
            self._key = secrets.token_bytes(32)
        flood = _count(self._visitors, visitor) > self.per_visitor
        if self.per_address and address:
            mark = hashlib.blake2b(address.encode(), key=self._key, digest_size=16).digest()
            try:
                block_key = self._blocks[mark]
            except KeyError:
                block = _limited_block(address)
                block_key = None
                if block is not None:
                    block_key = (
                        mark if len(block) == 4 else hashlib.blake2b(block, key=self._key, digest_size=16).digest()
                    )
                if len(self._blocks) < MAX_KEYS:
                    self._blocks[mark] = block_key
            if block_key is not None:
                flood = _count(self._addresses, block_key) > self.per_address or flood
        return flood

    def __len__(self) -> int:
        """How many visitors and address blocks are counted (for tests of the bound)."""
        return len(self._visitors) + len(self._addresses)


def _count(table: dict[Any, int], key: Any) -> int:
    count = table.get(key, 0) + 1
    if count > 1 or len(table) < MAX_KEYS:
        table[key] = count
    return count


# Where a proxy, a load balancer or a container network sits: RFC 1918, carrier-grade NAT's
# shared space, loopback, link-local, and their IPv6 kin (unique local, link-local).
_PROXY_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
    )
)


def _limited_block(address: str) -> bytes | None:
    """The bytes an address is counted under, or None for one never limited: private, loopback
    and link-local addresses are where a proxy chain not set in `TRACKSIDE_TRUSTED_PROXIES` puts
    every visitor, and limiting them would call the whole site a flood; behind carrier-grade NAT
    (100.64.0.0/10) are a carrier's many subscribers. (Not memoised: a cache would hold raw
    addresses.)"""
    # A dotted IPv4 address in its plain form, the common case, without `ipaddress` (about a tenth
    # of the cost; each address is looked at once a minute, and at a few requests a minute per
    # visitor that is a third of them). Anything else takes the general path below.
    octets = plain_ipv4(address)
    if octets is not None:
        a, b = octets[0], octets[1]
        if (
            a in (0, 10, 127)
            or (a == 172 and 16 <= b <= 31)
            or (a == 192 and b == 168)
            or (a == 100 and 64 <= b <= 127)
            or (a == 169 and b == 254)
        ):
            return None  # the IPv4 networks of _PROXY_NETWORKS
        return bytes(octets)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # no address resolved (a forged X-Forwarded-For entry): nothing to count
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in _PROXY_NETWORKS):
        return None
    if ip.version == 6:
        return ip.packed[:8]
    return ip.packed
