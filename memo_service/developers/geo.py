"""Where an IP address is: a real, kept geolocation database, never a table of ours.

The embedded default is iptocc, whose data (built from the regional internet registries'
delegation files) ships inside the package: it works offline and gives the country an
address is *registered* to, not where it was observed. In production `GEOIP_DATABASE`
names a MaxMind GeoIP2/GeoLite2 Country or DB-IP Country Lite `.mmdb` file, read with
maxminddb. Each rollup a database resolved keeps its `name` (database and version).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class GeoDatabase:
    name: str  # "iptocc 3.3.170", "GeoLite2-Country 2026-11-28"
    _lookup: Callable[[str], str | None]

    def country(self, ip: str) -> str:
        """The ISO code of `ip`'s country; ValueError, saying why, if there is none. The
        database is asked first: parsing every address with `ipaddress` would cost forty
        times its look-up, and an address it places is a public one."""
        ip = ip.strip()
        try:
            code = self._lookup(ip)
        except ValueError:  # maxminddb's word for a string that is no address
            code = None
        if code:
            return code.upper()
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"{ip[:60]!r} is not an IP address") from None
        if not address.is_global:
            raise ValueError(f"{address} is not a public address")
        raise ValueError(f"{self.name} has no country for {address}")


def _iptocc() -> GeoDatabase:
    import iptocc

    return GeoDatabase(f"iptocc {metadata.version('iptocc')}", iptocc.country_code)


def _mmdb(path: str) -> GeoDatabase:
    import maxminddb

    try:
        reader = maxminddb.open_database(path)
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"GEOIP_DATABASE={path}: {exc}") from None
    meta = reader.metadata()
    built = dt.datetime.fromtimestamp(meta.build_epoch, dt.UTC).date()

    def lookup(ip: str) -> str | None:
        record = reader.get(ip)
        if not isinstance(record, dict):
            return None
        for key in ("country", "registered_country"):  # GeoIP2 and DB-IP name it "country"
            place = record.get(key)
            code = place.get("iso_code") if isinstance(place, dict) else None
            if isinstance(code, str):
                return code
        return None

    return GeoDatabase(f"{meta.database_type} {built.isoformat()}", lookup)


@functools.cache
def _database(path: str) -> GeoDatabase:
    return _mmdb(path) if path else _iptocc()


def geo_database() -> GeoDatabase:
    """The configured database, opened once per process and path."""
    return _database(settings.GEOIP_DATABASE)
