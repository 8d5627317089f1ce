"""The capture path's faster forms give the same answers as the plain ones (issue 16)."""

from __future__ import annotations

import hmac
import os

from trackside.enrich.visitor import visitor_hash


def test_visitor_hash_is_hmac_sha256_on_any_input() -> None:
    # CPython's own SHA-256 (not OpenSSL's) underneath: the same HMAC, byte for byte.
    for i in range(2000):
        salt = os.urandom(i % 100 + 1)  # short, block-sized and long (hashed first) keys
        ip = f"{i % 256}.{i // 256}.0.1" if i % 3 else f"2001:db8::{i:x}"
        ua = os.urandom(i % 300).decode("latin-1")
        expected = hmac.digest(salt, f"site\x00{ip}\x00{ua}".encode("utf-8", "surrogateescape"), "sha256")[:16].hex()
        assert visitor_hash(salt, "site", ip, ua) == expected
