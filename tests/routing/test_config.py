"""Config validation: every error names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrouter.cli import main
from dnsrouter.config import load_config
from dnsrouter.errors import ConfigError

from .helpers import CASES_TOML, write_config


def test_the_cases_config_loads_into_frozen_objects(tmp_path: Path):
    config = load_config(write_config(tmp_path, CASES_TOML))

    assert config.cdn_names == ("cdn.example.com.",)
    assert [pop.name for pop in config.pops] == ["eu", "ap", "us"]
    assert config.listen == (("127.0.0.1", 8053),)
    assert config.zones_dir == tmp_path / "zones"
    assert config.health.fall == 3 and config.health.rise == 2
    with pytest.raises(AttributeError):
        config.pops[0].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("latitude = 50.11", 'latitude = "abc"'),
         'pop.eu.latitude: must be a number between -90 and 90, got "abc"'),
        (("longitude = 8.68", "longitude = 181"),
         "pop.eu.longitude: must be a number between -180 and 180, got 181"),
        (('pop = "eu"', 'pop = "mars"'),
         'edge.eu21.pop: names no [[pop]], got "mars"'),
        (('ipv4 = "192.0.2.21"', 'ipv4 = "2001:db8::1"'),
         'edge.eu21.ipv4: must be an IPv4 address, got "2001:db8::1"'),
        (("answers = 3", "answers = 0"),
         "routing.answers: must be an integer from 1 to 64, got 0"),
        (("fall = 3", "fal = 3"), "health.fal: unknown key"),
        (('default_pop = "us"', 'default_pop = "xx"'),
         'cdn["cdn.example.com."].default_pop: names no [[pop]], got "xx"'),
        (('name = "cdn.example.com."', 'name = "cdn.example.org."'),
         'cdn["cdn.example.org."].name: lies in no zone served from'),
        (("timeout = 0.5", "timeout = 5"),
         "health.timeout: must be a number between 0.01 and 1"),
        (('health_url = "http://192.0.2.21/health"',
          'health_url = "ftp://192.0.2.21/health"'),
         "edge.eu21.health_url: must be an http:// URL"),
    ],
)
def test_errors_name_file_key_and_problem(
    tmp_path: Path, change: tuple[str, str], message: str
):
    body = CASES_TOML.replace(*change, 1)
    path = write_config(tmp_path, body)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_netmap_entries_and_ecs_settings_are_validated(tmp_path: Path):
    body = CASES_TOML + '\n[[netmap]]\nnetwork = "10.0.0.1/8"\npop = "eu"\n'

    with pytest.raises(ConfigError, match=r"netmap\[0\]\.network: .*no host"):
        load_config(write_config(tmp_path, body))


def test_unreadable_and_invalid_toml_are_reported_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """`dnsrouter check` exits 2 with one line naming the file."""
    path = write_config(tmp_path, "[[pop]\n")

    status = main(["check", "--config", str(path)])

    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith(f"dnsrouter check: {path}: not valid TOML")
    assert "Traceback" not in error


def test_check_reports_ok_for_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = write_config(tmp_path, CASES_TOML)

    assert main(["check", "--config", str(path)]) == 0
    assert "ok: 1 CDN names, 3 PoPs, 6 edges" in capsys.readouterr().out


def test_missing_geoip_database_is_named_with_its_key(tmp_path: Path):
    body = CASES_TOML + '\n[geoip]\ndatabase = "GeoIP2-City.mmdb"\n'
    path = write_config(tmp_path, body)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == (
        f'{path}: geoip.database: file does not exist, '
        f'got "{tmp_path / "GeoIP2-City.mmdb"}"'
    )


US41 = '''name = "us41"
pop = "us"
ipv4 = "192.0.2.41"
ipv6 = "2001:db8:50::41"'''


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # The default PoP of a CDN name must be able to answer.
        ((US41, US41.replace('pop = "us"', 'pop = "eu"')),
         'cdn["cdn.example.com."].default_pop: names a [[pop]] with no '
         '[[edge]], got "us"'),
        (('name = "ap"', 'name = ""'),
         'pop[1].name: must not be empty'),
        (('name = "eu21"', 'name = " "'),
         'edge[0].name: must not be empty'),
        (('ipv4 = "192.0.2.41"', 'ipv4 = "192.0.2.21"'),
         'edge.us41.ipv4: same address as edge eu21, got "192.0.2.21"'),
        (('ipv6 = "2001:db8:50::41"', 'ipv6 = "2001:DB8:e0::22"'),
         'edge.us41.ipv6: same address as edge eu22, got "2001:db8:e0::22"'),
    ],
)
def test_unusable_pops_empty_names_and_shared_addresses_are_refused(
    tmp_path: Path, change: tuple[str, str], message: str
):
    """Issue 11: these loaded before and misrouted or hid edges."""
    body = CASES_TOML.replace(*change, 1)
    assert body != CASES_TOML
    path = write_config(tmp_path, body)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == f"{path}: {message}"

