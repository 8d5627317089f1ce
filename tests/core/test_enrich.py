"""Enrichment steps: client IP, referrer, UTM, JWT user, country, visitor hash."""

from __future__ import annotations

import hmac
import ipaddress
import time

import jwt
import pytest

from tests.geo_db import build_country_mmdb
from trackside.enrich.auth import TokenVerifier
from trackside.enrich.client_ip import ClientIP
from trackside.enrich.geo import CountryLookup
from trackside.enrich.referrer import referrer_domain, utm
from trackside.enrich.visitor import visitor_hash

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "1.1.1.1", "203.0.113.5"),  # untrusted peer: its header is a forgery
        ("10.0.0.2", "1.1.1.1", "1.1.1.1"),
        ("10.0.0.2", "6.6.6.6, 1.1.1.1", "1.1.1.1"),  # the client wrote 6.6.6.6 itself
        ("10.0.0.2", "1.1.1.1, 10.0.0.9", "1.1.1.1"),  # a second trusted hop is skipped
        ("10.0.0.2", "garbage", ""),
        ("10.0.0.2", "10.0.0.7", "10.0.0.7"),
    ],
)
def test_client_ip(peer, xff, client):
    assert ClientIP(TRUSTED).resolve(peer, xff) == client


@pytest.mark.parametrize(
    ("referer", "own", "domain"),
    [
        ("https://www.Google.com/search?q=x", "makapix.club", "google.com"),
        ("https://user:pw@news.ycombinator.com:8443/item", "makapix.club", "news.ycombinator.com"),
        ("https://makapix.club/p/a1", "makapix.club", None),
        ("https://www.makapix.club/", "makapix.club:443", None),
        ("not a url", "makapix.club", None),
        ("http://81.2.69.142:8080/x", "makapix.club", None),
        ("http://[2a02:ff40::1]/x", "makapix.club", None),
        ("", "makapix.club", None),
        (None, "makapix.club", None),
    ],
)
def test_referrer_domain(referer, own, domain):
    assert referrer_domain(referer, own) == domain


def test_utm_keeps_only_utm():
    assert utm("token=secret&utm_source=news&utm_medium=email&utm_campaign=fall&x=1") == ("news", "email", "fall")
    assert utm("token=secret") == (None, None, None)


def test_jwt_user_verified_or_anonymous():
    secret = "s" * 32
    verifier = TokenVerifier(secret)
    good = jwt.encode({"sub": "k3x", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    legacy = jwt.encode({"user_id": "550e8400", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    forged = jwt.encode({"sub": "admin"}, "wrong-secret-wrong-secret-wrong!!", algorithm="HS256")
    expired = jwt.encode({"sub": "k3x", "exp": int(time.time()) - 5}, secret, algorithm="HS256")
    none_alg = jwt.encode({"sub": "admin"}, None, algorithm="none")
    assert verifier.user_from_header("Bearer " + good) == "k3x"
    assert verifier.user_from_header("bearer " + good) == "k3x"
    assert verifier.user_from_header("Bearer " + legacy) == "550e8400"
    for token in (forged, expired, none_alg, "junk", ""):
        assert verifier.user_from_header("Bearer " + token) is None
    assert verifier.user_from_header("Basic abc") is None
    assert TokenVerifier(None).user_from_header("Bearer " + good) is None


def test_country_from_mmdb_and_header(tmp_path):
    lookup = CountryLookup(str(build_country_mmdb(tmp_path / "c.mmdb")), None)
    assert lookup.country("81.2.69.142", None) == "GB"
    assert lookup.country("200.160.2.3", None) == "BR"
    assert lookup.country("2a02:ff40::1", None) == "JP"
    assert lookup.country("8.8.8.8", None) is None  # not in the database
    assert lookup.country("203.0.113.7", None) is None  # documentation range
    assert lookup.country("10.1.2.3", None) is None  # private
    assert lookup.country("", None) is None
    lookup.close()
    header = CountryLookup(None, "CF-IPCountry")
    assert header.country("203.0.113.7", "de") == "DE"
    assert header.country("203.0.113.7", "XX") is None
    assert header.country("203.0.113.7", "T1") is None
    assert CountryLookup(None, None).country("203.0.113.7", "DE") is None


def test_visitor_hash_is_salted_and_separated():
    a = visitor_hash(b"salt1", "site", "1.2.3.4", "UA")
    assert a == visitor_hash(b"salt1", "site", "1.2.3.4", "UA")
    # Plain HMAC-SHA256, truncated to 128 bits (the precomputed pads change nothing).
    assert a == hmac.digest(b"salt1", b"site\x001.2.3.4\x00UA", "sha256")[:16].hex()
    long_salt = b"k" * 100
    assert visitor_hash(long_salt, "s", "ip", "ua") == hmac.digest(long_salt, b"s\x00ip\x00ua", "sha256")[:16].hex()
    assert a != visitor_hash(b"salt2", "site", "1.2.3.4", "UA")
    assert visitor_hash(b"s", "site", "1.2.3.4", "5 UA") != visitor_hash(b"s", "site", "1.2.3.45", " UA")
    assert len(a) == 32 and "1.2.3.4" not in a
