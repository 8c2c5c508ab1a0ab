"""Build geodata/test-city.mmdb, the GeoIP fixture of the field cases.

Documentation address ranges are in no real GeoIP database, so the
routing tests need a small database in MaxMind's City layout that
maps exactly four networks and nothing else:

* 198.51.100.0/24 and 2001:db8:1234::/48 at Berlin (DE, 52.52, 13.40);
* 203.0.113.0/24 and 2001:db8:5678::/48 at Osaka (JP, 34.69, 135.50).

Run it from the repository root with the test extra installed::

    python geodata/build_test_db.py

The output is committed, so tests do not need mmdb-writer at run time.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmdb_writer import MMDBWriter, MmdbF64, MmdbU16, MmdbU32
from netaddr import IPSet

OUTPUT = Path(__file__).with_name("test-city.mmdb")


def city_record(
    city: str,
    city_id: int,
    country: str,
    country_id: int,
    continent: str,
    location: tuple[float, float],
) -> dict[str, object]:
    """One record in the GeoLite2 City layout (the fields routing reads)."""
    latitude, longitude = location

    return {
        "city": {"geoname_id": MmdbU32(city_id), "names": {"en": city}},
        "continent": {"code": continent},
        "country": {
            "geoname_id": MmdbU32(country_id),
            "iso_code": country,
        },
        "location": {
            "accuracy_radius": MmdbU16(20),
            "latitude": MmdbF64(latitude),
            "longitude": MmdbF64(longitude),
        },
    }


BERLIN = city_record("Berlin", 2950159, "DE", 2921044, "EU", (52.52, 13.40))
OSAKA = city_record("Osaka", 1853909, "JP", 1861060, "AS", (34.69, 135.50))

NETWORKS = (
    ("198.51.100.0/24", BERLIN),
    ("2001:db8:1234::/48", BERLIN),
    ("203.0.113.0/24", OSAKA),
    ("2001:db8:5678::/48", OSAKA),
)


def build(path: Path) -> None:
    """Write the fixture database to `path`."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-City",
        languages=["en"],
        description="pycdn test fixture (documentation ranges only)",
    )
    for network, record in NETWORKS:
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))


def main() -> int:
    """Build the database next to this script and say where it went."""
    build(OUTPUT)
    print(f"wrote {OUTPUT}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
