"""The shortcuts taken for speed on capture's path (issue 16) answer exactly what the general code does."""

from __future__ import annotations

import ipaddress
import random

from trackside import flood
from trackside.classify import Classification, classify


def general_block(address: str) -> bytes | None:
    """`flood._limited_block` as it was before its IPv4 shortcut: `ipaddress` for everything."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in flood._PROXY_NETWORKS):
        return None
    return ip.packed[:8] if ip.version == 6 else ip.packed


EDGES = [
    "81.2.3.4", "9.9.9.9", "255.255.255.255", "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255",
    "11.0.0.0", "172.15.255.255", "172.16.0.0", "172.31.255.255", "172.32.0.0", "192.167.255.255",
    "192.168.0.0", "192.168.255.255", "192.169.0.0", "100.63.255.255", "100.64.0.0", "100.127.255.255",
    "100.128.0.0", "126.255.255.255", "127.0.0.1", "128.0.0.0", "169.253.255.255", "169.254.0.1",
    "169.255.0.0", "256.1.1.1", "1.2.3.256", "01.2.3.4", "1.2.3.04", "001.2.3.4", "1.2.3", "1.2.3.4.5",
    "1..2.3", "+1.2.3.4", " 1.2.3.4", "1.2.3.4 ", "\u0661.2.3.4", "1_0.2.3.4", "1.2.3.-4", "", "abc",
    "::1", "::", "2001:db8::1", "fe80::1", "fc00::1", "::ffff:10.1.2.3", "::ffff:81.1.2.3", "1.2.3.4%eth0",
]  # fmt: skip


def test_the_ipv4_shortcut_counts_every_address_as_ipaddress_does():
    rnd = random.Random(16)
    addresses = EDGES + [".".join(str(rnd.randrange(256)) for _ in range(4)) for _ in range(50_000)]
    addresses += [".".join(rnd.choice(["0", "00", "1", "99", "255", "256", "-1", "01", " 2", ""]) for _ in range(4))
                  for _ in range(5_000)]  # fmt: skip
    assert [flood._limited_block(a) for a in addresses] == [general_block(a) for a in addresses]
    assert flood._limited_block("81.2.3.4") == bytes((81, 2, 3, 4))
    assert flood._limited_block("172.20.1.1") is None


def test_a_classification_is_still_immutable_and_compares_by_value():
    c = classify("GET", "/api/item", {}, 200, "application/json", is_api=True)
    assert c == Classification("api_call", "api", "/api/item")
    assert (c.kind, c.nav, c.path, c.error_type, c.reason) == ("api_call", "api", "/api/item", None, "")
    try:
        c.kind = "page_view"  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a Classification could be changed")
