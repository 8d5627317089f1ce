"""The shortcuts taken for speed on capture's path (issue 16) answer exactly what the general code does."""

from __future__ import annotations

import ipaddress
import random

from trackside import flood
from trackside.classify import Classification, classify
from trackside.enrich.client_ip import ClientIP


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


def general_resolve(trusted: list, peer: str, forwarded_for: str) -> str:
    """`ClientIP.resolve` as it was before its IPv4 shortcut: `ipaddress` for every hop."""

    def is_trusted(host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in trusted)

    def valid_or_empty(host: str) -> str:
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return ""

    if not forwarded_for or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return valid_or_empty(hop)
    return valid_or_empty(hops[0]) if hops else peer


def test_the_ipv4_shortcut_resolves_every_client_as_ipaddress_does():
    trusted = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "127.0.0.1/32", "81.2.3.0/24", "0.0.0.0/32",
                                                 "::1/128", "::ffff:0:0/96", "2001:db8::/32")]  # fmt: skip
    client_ip = ClientIP(trusted)
    rnd = random.Random(17)
    hosts = EDGES + ["81.2.3.9", "81.2.4.9", "10.9.9.9", "11.0.0.0", "::ffff:81.2.3.4", "2001:db8::7"]
    hosts += [".".join(str(rnd.randrange(256)) for _ in range(4)) for _ in range(20_000)]
    hosts += [f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}" for _ in range(2_000)]
    hosts += [f"81.2.{rnd.choice(['3', '4', '03'])}.{rnd.randrange(256)}" for _ in range(2_000)]
    peers = ["127.0.0.1", "10.1.2.3", "81.2.3.1", "9.9.9.9", "::1", "2001:db8::1"]
    got, want = [], []
    for i, host in enumerate(hosts):
        peer = peers[i % len(peers)]
        # Chains of one to three hops, the trusted ones on the right as a proxy chain writes them.
        chain = ", ".join([host] + [rnd.choice(["10.0.0.2", "81.2.3.7", host, " 1.2.3.4 "]) for _ in range(i % 3)])
        got.append((client_ip.is_trusted(host), client_ip.resolve(peer, chain)))
        want.append((any(_in(host, net) for net in trusted), general_resolve(trusted, peer, chain)))
    assert got == want
    assert client_ip.resolve("127.0.0.1", "81.9.9.9, 10.0.0.2") == "81.9.9.9"
    assert client_ip.resolve("127.0.0.1", "81.9.9.9, 81.2.3.200") == "81.9.9.9"
    assert client_ip.resolve("127.0.0.1", "01.9.9.9") == ""  # what `ipaddress` refuses is no address
    assert client_ip.resolve("9.9.9.9", "81.9.9.9") == "9.9.9.9"  # an untrusted peer's header: ignored


def _in(host: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(host) in net
    except ValueError:
        return False


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
