"""CDN names and zone data: a CDN name must not be
a zone apex or own records in a zone file, and `dnsrouter check` loads the
zones exactly as `serve` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dnsrouter.cdnzones import check_cdn_names, find_cdn_name_conflicts
from dnsrouter.cli import main
from dnsrouter.config import load_config
from dnsrouter.errors import ConfigError
from dnsrouter.zone import load_zone_dir

from .helpers import CASES_TOML, REPO, TEST_DB, ZONE, write_config


def setup(tmp_path: Path, zone_extra: str = "", cdn: str = "cdn.example.com."):
    """A config whose CDN name is `cdn`, over the example.com zone plus
    `zone_extra`; returns the config path and the zone file."""
    body = CASES_TOML.replace('"cdn.example.com."', f'"{cdn}"', 1)
    path = write_config(tmp_path, f'[geoip]\ndatabase = "{TEST_DB}"\n' + body)
    zone_file = tmp_path / "zones" / "example.com.zone"
    zone_file.write_text(ZONE + zone_extra)

    return path, zone_file


def conflicts(tmp_path: Path, zone_extra: str, cdn: str) -> list[str]:
    path, _ = setup(tmp_path, zone_extra, cdn)
    config = load_config(path)

    return find_cdn_name_conflicts(config, load_zone_dir(config.zones_dir))


def test_a_cdn_name_at_a_zone_apex_is_refused_when_the_config_loads(
    tmp_path: Path,
):
    """The apex's SOA and NS would be hidden behind the CDN answer, so the
    config itself is refused: at serve start, on reload and by check."""
    path, zone_file = setup(tmp_path, cdn="example.com.")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == (
        f'{path}: cdn["example.com."].name: is the apex of zone file '
        f"{zone_file}, whose SOA and NS a CDN name would hide; use a name "
        f'below it, got "example.com."'
    )


def test_a_cdn_name_that_owns_zone_data_names_both_files_and_the_key(
    tmp_path: Path,
):
    path, zone_file = setup(
        tmp_path, 'www IN A 192.0.2.80\nwww IN TXT "x"\n', "www.example.com."
    )
    config = load_config(path)

    found = find_cdn_name_conflicts(config, load_zone_dir(config.zones_dir))

    assert found == [
        f'{path}: cdn["www.example.com."].name: owns A, TXT records in zone '
        f"file {zone_file}, which the CDN answer would replace; remove them "
        f'there or pick another name, got "www.example.com."'
    ]
    with pytest.raises(ConfigError, match="owns A, TXT records"):
        check_cdn_names(config, load_zone_dir(config.zones_dir))


@pytest.mark.parametrize(
    ("zone_extra", "cdn", "problem"),
    [
        ("", "cdn.example.com.", None),
        # Names below it make it an empty non-terminal, not data it owns.
        ("a.cdn IN A 192.0.2.81\n", "cdn.example.com.", None),
        # A wildcard never claims a name that exists (RFC 4592 2.2.1).
        ("* IN A 192.0.2.82\n", "cdn.example.com.", None),
        ("cdn IN CNAME www\nwww IN A 192.0.2.80\n", "cdn.example.com.",
         "owns CNAME records"),
        ("sub IN NS ns.other.example.\n", "cdn.sub.example.com.",
         "lies below the delegation of sub.example.com."),
        ("old IN DNAME example.net.\n", "cdn.old.example.com.",
         "lies below the DNAME of old.example.com."),
    ],
)
def test_conflicts_table(
    tmp_path: Path, zone_extra: str, cdn: str, problem: str | None
):
    """Which zone contents make a CDN name a configuration error."""
    found = conflicts(tmp_path, zone_extra, cdn)

    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0], found


def test_check_reports_a_bad_zone_as_file_line_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Issue 4: serve refuses this zone, so check must not say ok."""
    path, zone_file = setup(tmp_path, "bad IN A 192.0.2.999\n")
    line = (ZONE + "bad").count("\n") + 1

    status = main(["check", "--config", str(path)])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.startswith(f"{zone_file}:{line}: ")
    assert "192.0.2.999" in captured.err
    assert "ok" not in captured.out


def test_check_reports_a_zone_file_of_random_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path, zone_file = setup(tmp_path)
    zone_file.write_bytes(bytes(range(256)) * 4)

    status = main(["check", "--config", str(path)])

    assert status == 1
    assert capsys.readouterr().err.startswith(f"{zone_file}:")


def test_check_reports_a_cdn_name_owning_zone_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path, zone_file = setup(tmp_path, "www IN A 192.0.2.80\n", "www.example.com.")

    status = main(["check", "--config", str(path)])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.startswith(f'{path}: cdn["www.example.com."].name: ')
    assert str(zone_file) in captured.err


def test_check_counts_the_zones_it_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path, _ = setup(tmp_path)

    assert main(["check", "--config", str(path)]) == 0
    assert ", 1 zones, " in capsys.readouterr().out


@pytest.mark.e2e
def test_serve_refuses_to_start_with_a_cdn_name_at_an_apex(tmp_path: Path):
    """The real process exits 2 before binding, naming file and key."""
    path, zone_file = setup(tmp_path, cdn="example.com.")

    done = subprocess.run(
        [sys.executable, "-m", "dnsrouter.cli", "serve", "--config", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )

    assert done.returncode == 2
    assert f'{path}: cdn["example.com."].name: is the apex of zone' in done.stderr
    assert str(zone_file) in done.stderr
