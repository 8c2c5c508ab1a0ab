"""The GeoIP database as loaded: a private in-memory copy that a file
changed on disk cannot crash or alter, validation that refuses a corrupt
search tree at load, and lookups that fail at query time falling back to
the default PoP with rate-limited warnings."""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_database_with_corrupt_search_tree_is_refused_at_load(
    tmp_path: Path,
) -> None:
    """Valid metadata, garbage tree: the load fails naming the file and
    the corruption, instead of every lookup failing later."""
    with pytest.raises(GeoIPError, match="corrupt GeoIP database.*search tree"):
        GeoDatabase(corrupt_copy(tmp_path))


def test_check_and_reload_refuse_a_corrupt_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dnsrouter check` exits 2 naming the problem, and a router reload
    with it raises and keeps the old database deciding."""
    path = write_config(tmp_path, CASES_TOML)
    router, _, _ = make_router(load_config(path))
    bad = corrupt_copy(tmp_path)
    path.write_text(path.read_text() + f'\n[geoip]\ndatabase = "{bad}"\n')

    assert main(["check", "--config", str(path)]) == 2
    assert "corrupt GeoIP database" in capsys.readouterr().err
    with pytest.raises(GeoIPError):
        router.reload(load_config(path))
    answer = router.route(CDN, QTYPE_A, LOCAL, ecs("198.51.100.0/24"))
    assert "192.0.2.21" in answer.addresses


class FailingGeo:
    """A database whose lookups all fail, as a corrupt region does."""

    def lookup_prefix(self, address: object) -> tuple[None, int]:
        raise GeoIPError(f"lookup of {address} failed: search tree is corrupt")


class Ticks:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failing_lookups_decide_the_default_pop_with_one_line_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each failing lookup gives the default order (empty list) for that
    address alone; 50 failures in one second log one line, and the next
    second opens with the count of the others."""
    ticks = Ticks()
    pops = (PopConfig("eu", 50.11, 8.68),)
    geo: Any = FailingGeo()   # duck-types GeoDatabase.lookup_prefix
    decide = Decider(geo, NetworkMap([]), PopRanker(pops), clock=ticks)
    caplog.set_level(logging.WARNING, "dnsrouter.geoip")

    decisions = [
        decide.decide(ipaddress.IPv4Address(f"198.51.100.{i}")) for i in range(50)
    ]
    ticks.now += 1.5
    decide.decide(ipaddress.IPv4Address("203.0.113.1"))

    assert {(d.pops, d.source, d.scope) for d in decisions} == {
        ((), SOURCE_DEFAULT, 32)
    }
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "\n" not in "".join(lines)
    assert lines[0].startswith("geoip lookup_failed address=198.51.100.0 ")
    assert lines[1] == "geoip lookup_failed suppressed=49"


def test_router_answers_a_failing_lookup_from_the_default_pop(
    tmp_path: Path,
) -> None:
    """Through the router: the US default PoP's edge, never an exception
    that the server would turn into SERVFAIL."""
    config = load_config(write_config(tmp_path, CASES_TOML))
    router, _, _ = make_router(config)
    router.geo = FailingGeo()  # type: ignore[assignment]
    router.reload(config, geo=router.geo)

    answer = router.route(CDN, QTYPE_A, LOCAL, ecs("198.51.100.0/24"))

    assert answer.addresses == ("192.0.2.41",)
