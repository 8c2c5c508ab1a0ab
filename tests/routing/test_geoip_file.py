"""The GeoIP database as loaded: a private in-memory copy that a file
changed on disk cannot crash or alter."""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import maxminddb
import pytest

from dnsrouter.cli import main
from dnsrouter.config import PopConfig, load_config
from dnsrouter.decision import SOURCE_DEFAULT, Decider, PopRanker
from dnsrouter.errors import GeoIPError
from dnsrouter.geoip import GeoDatabase
from dnsrouter.netmap import NetworkMap
from dnsrouter.routing import QTYPE_A

from .helpers import CASES_TOML, LOCAL, REPO, TEST_DB, ecs, make_router, write_config

CDN = "cdn.example.com."


def corrupt_copy(directory: Path) -> Path:
    """The test database with the second half of its search tree written
    over; its metadata stays valid, so it opens."""
    data = bytearray(TEST_DB.read_bytes())
    metadata = maxminddb.open_database(str(TEST_DB)).metadata()
    tree = metadata.node_count * metadata.record_size * 2 // 8
    data[tree // 2 : tree] = b"\xff" * (tree - tree // 2)
    path = directory / "corrupt.mmdb"
    path.write_bytes(bytes(data))

    return path


TRUNCATE_WHILE_OPEN = """
import ipaddress, sys
from pathlib import Path
from dnsrouter.geoip import GeoDatabase

path = Path(sys.argv[1])
geo = GeoDatabase(path)
path.write_bytes(b"")   # truncated in place, as `: > city.mmdb` does
for i in range(256):
    geo.lookup(ipaddress.IPv4Address(f"{i}.20.0.1"))
print(geo.lookup(ipaddress.IPv4Address("198.51.100.1")).record.city)
"""


def test_database_truncated_on_disk_does_not_crash_or_change_answers(
    tmp_path: Path,
) -> None:
    """A real process: the file is emptied while open, then new addresses
    are looked up; the process neither dies of SIGBUS nor loses Berlin."""
    copy = tmp_path / "city.mmdb"
    shutil.copy(TEST_DB, copy)

    result = subprocess.run(
        [sys.executable, "-c", TRUNCATE_WHILE_OPEN, str(copy)],
        capture_output=True, text=True, cwd=REPO, timeout=30,
    )

    assert (result.returncode, result.stdout.strip()) == (0, "Berlin")
