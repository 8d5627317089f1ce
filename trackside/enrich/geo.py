"""Country of an IP from a MaxMind-format `.mmdb` (geoip2), else from a trusted CDN header.

The header's value is passed in only when the request came from a trusted proxy (capture sees to
it): a client talking to the sidecar directly could write any country in it."""

from __future__ import annotations

from functools import lru_cache

from trackside.enrich.client_ip import is_private


class CountryLookup:
    def __init__(self, mmdb_path: str | None, header: str | None) -> None:
        self._reader = None
        if mmdb_path:
            import geoip2.database

            self._reader = geoip2.database.Reader(mmdb_path)
        self.header = header.lower() if header else None
        self._lookup = lru_cache(maxsize=16384)(self._lookup_uncached)

    def country(self, ip: str, header_value: str | None) -> str | None:
        if self._reader is not None and ip:
            return self._lookup(ip)
        if self.header and header_value:
            code = header_value.strip().upper()
            # Cloudflare says XX for unknown and T1 for Tor: neither is a country.
            if len(code) == 2 and code.isalpha() and code not in ("XX", "T1"):
                return code
        return None

    def _lookup_uncached(self, ip: str) -> str | None:
        if is_private(ip):
            return None
        try:
            code = self._reader.country(ip).country.iso_code  # type: ignore[union-attr]
        except Exception:  # address not found, or a corrupt record: no country, never a failure
            return None
        return code.upper() if code else None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
