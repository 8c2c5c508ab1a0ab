"""GeoIP lookups in MaxMind-format databases, reduced to what routing needs.

The reader is `maxminddb`'s (about twice as fast as geoip2's model
objects), and `get_with_prefix_len` gives the database network that holds
an address, which the ECS scope needs. Records are read in the GeoIP2 /
GeoLite2 City layout, which DB-IP's City mmdb files share; IPinfo's flat
layout (`lat`, `lng`, `country`, `city` at the top level) is read too.

A record that knows the country but not the city carries the country's
centre as coordinates (MaxMind documents this, with a large accuracy
radius). `GeoRecord.is_country_level` marks such records so that routing
does not treat the centre of a country as a client's location.

Every maxminddb exception is converted to GeoIPError here.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

from dnsrouter.errors import GeoIPError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Lookups per address family that validate a database at load. The upper
# levels of the search tree are shared by every lookup, so addresses
# spread evenly reach all of them and many nodes below: a tree or data
# section written over in any busy region fails here. 4096 cost about
# 60 ms on GeoLite2 City, once per load.
VALIDATION_SAMPLES = 4096

# No writes and no size change once the copy is made (fcntl(2), memfd).
_SEALS = (
    getattr(fcntl, "F_SEAL_WRITE", 8)
    | getattr(fcntl, "F_SEAL_SHRINK", 2)
    | getattr(fcntl, "F_SEAL_GROW", 4)
    | getattr(fcntl, "F_SEAL_SEAL", 1)
)


@dataclass(frozen=True)
class GeoRecord:
    """Where a database places a network, and how sure it is."""

    latitude: float
    longitude: float
    accuracy_km: int | None
    country: str | None   # ISO 3166-1 alpha-2
    city: str | None      # English name when the database has one
    is_country_level: bool  # True: no city, the coordinates are a centroid


@dataclass(frozen=True)
class GeoMatch:
    """A lookup result: the record (None when absent) and its network."""

    record: GeoRecord | None
    network: IPNetwork


def default_database_path() -> Path:
    """The GeoLite2 City file that the maxminddb-geolite2 package carries."""
    try:
        from _maxminddb_geolite2 import geolite2_database
    except ImportError as error:
        raise GeoIPError(
            "no GeoIP database configured and maxminddb-geolite2 is not "
            "installed; set [geoip] database to an mmdb file"
        ) from error

    return Path(geolite2_database())


class GeoDatabase:
    """An open MaxMind-format database, held in memory; lookups do not
    block on I/O and do not depend on the file any more.

    The file is read once into a private sealed memory file, which the C
    reader maps: a database truncated or written over in place on disk
    can then neither crash the process (SIGBUS on a mapped page that is
    gone) nor change answers; a new file applies on reload only. Forked
    workers share the pages. Opening reads the whole file (blocking) and
    validates it with lookups spread over the address space (see
    `validate`), so a file whose search tree or data is corrupt is refused
    at load, not found out query by query. Lookups cost CPU only (about
    10 us each, most of it decoding the record).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_database_path()
        self._reader = _open_private_copy(self.path)
        metadata = self._reader.metadata()
        self.database_type: str = metadata.database_type
        self.build_epoch: int = metadata.build_epoch
        self.ip_version: int = metadata.ip_version
        try:
            self.validate()
        except GeoIPError:
            self._reader.close()
            raise

    def validate(self) -> None:
        """Look up VALIDATION_SAMPLES addresses spread evenly over IPv4
        (and as many over IPv6 2000::/3 in an IPv6 database) and decode
        their records; GeoIPError names the first address that fails."""
        step = (1 << 32) // VALIDATION_SAMPLES
        samples: list[IPAddress] = [
            ipaddress.IPv4Address(i * step + step // 2)
            for i in range(VALIDATION_SAMPLES)
        ]
        if self.ip_version == 6:
            step = (1 << 125) // VALIDATION_SAMPLES
            samples += [
                ipaddress.IPv6Address((1 << 125) + i * step + step // 2)
                for i in range(VALIDATION_SAMPLES)
            ]
        for address in samples:
            try:
                self.lookup_prefix(address)
            except GeoIPError as error:
                raise GeoIPError(f"corrupt GeoIP database: {error}") from None

    def lookup(self, address: IPAddress) -> GeoMatch:
        """The record for `address` and the database network holding it."""
        record, prefix = self.lookup_prefix(address)
        if address.version == 4:
            network: IPNetwork = ipaddress.IPv4Network(
                (int(address), prefix), strict=False
            )
        else:
            network = ipaddress.IPv6Network((int(address), prefix), strict=False)

        return GeoMatch(record, network)

    def lookup_prefix(self, address: IPAddress) -> tuple[GeoRecord | None, int]:
        """The record for `address` and the prefix length of its network.

        For an IPv4 address the prefix counts IPv4 bits, also in a database
        that stores IPv4 inside its IPv6 tree.
        """
        if address.version == 6 and self.ip_version == 4:
            return None, 0
        try:
            data, prefix = self._reader.get_with_prefix_len(address)
        except (ValueError, LookupError, maxminddb.InvalidDatabaseError) as error:
            raise GeoIPError(
                f"{self.path}: lookup of {address} failed: {error}"
            ) from error

        return record_from_data(data), prefix

    def close(self) -> None:
        """Release the memory copy; the object is unusable afterwards."""
        self._reader.close()


def _open_private_copy(path: Path) -> Any:
    """A C reader over a sealed in-memory copy of the file at `path`.

    Linux memfd: written once, sealed against writes and resizing, then
    mapped by the reader through /proc/self/fd; the descriptor is closed
    once mapped. Elsewhere, maxminddb's pure-Python in-memory reader
    (several times slower). Raises GeoIPError.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise GeoIPError(
            f"{path}: cannot open GeoIP database: {error.strerror}"
        ) from error
    try:
        if not hasattr(os, "memfd_create"):
            return maxminddb.open_database(str(path), maxminddb.MODE_MEMORY)
        fd = os.memfd_create("geoip", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            _write_all(fd, data)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            return maxminddb.open_database(
                f"/proc/self/fd/{fd}", maxminddb.MODE_MMAP_EXT
            )
        finally:
            os.close(fd)
    except (ValueError, maxminddb.InvalidDatabaseError) as error:
        raise GeoIPError(
            f"{path}: not a MaxMind-format database: {error}"
        ) from error


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def record_from_data(data: Any) -> GeoRecord | None:
    """Convert a decoded database record; None when it has no coordinates."""
    if not isinstance(data, dict):
        return None
    location = data.get("location")
    if isinstance(location, dict):
        latitude = location.get("latitude")
        longitude = location.get("longitude")
        accuracy = location.get("accuracy_radius")
    else:
        # IPinfo's flat layout keeps coordinates as strings.
        latitude = _float(data.get("lat", data.get("latitude")))
        longitude = _float(data.get("lng", data.get("longitude")))
        accuracy = None
    if not isinstance(latitude, (int, float)) or not isinstance(
        longitude, (int, float)
    ):
        return None
    country = _country(data)
    city = _city(data)

    return GeoRecord(
        latitude=float(latitude),
        longitude=float(longitude),
        accuracy_km=accuracy if isinstance(accuracy, int) else None,
        country=country,
        city=city,
        is_country_level=city is None,
    )


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _country(data: dict[str, Any]) -> str | None:
    country = data.get("country")
    if isinstance(country, dict):
        code = country.get("iso_code")
        return code if isinstance(code, str) else None
    if isinstance(country, str):
        return country

    return None


def _city(data: dict[str, Any]) -> str | None:
    city = data.get("city")
    if isinstance(city, dict):
        names = city.get("names")
        if isinstance(names, dict):
            name = names.get("en") or next(iter(names.values()), None)
            return name if isinstance(name, str) else None
        return None
    if isinstance(city, str) and city:
        return city

    return None
