"""Builds a small GeoLite2-Country-style `.mmdb` for the tests (none can be downloaded here)."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

NETWORKS = {"81.2.69.0/24": "GB", "200.160.2.0/24": "BR", "2a02:ff40::/32": "JP"}


def build_country_mmdb(path: Path) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for network, code in NETWORKS.items():
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code, "names": {"en": code}}})
    writer.to_db_file(str(path))
    return path
