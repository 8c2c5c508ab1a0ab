"""Configuration validation: every error names file, key and problem."""

from __future__ import annotations

from typing import Any

import pytest

from edge.config import load_config
from edge.errors import ConfigError

GOOD_SERVER = '[server]\nlisten = "127.0.0.1:8080"\ncache_dir = "c"\n'
GOOD_SITE = '[[site]]\nhostname = "cdn.example.com"\norigin = "http://127.0.0.1:9"\n'


@pytest.mark.parametrize("text, key, problem", [
    ("", "server", "missing table"),
    ("[server\n", "-", "TOML syntax"),
    (GOOD_SERVER, "site", "at least one"),
    ('[server]\nlisten = "127.0.0.1"\ncache_dir = "c"\n' + GOOD_SITE,
     "server.listen", "host:port"),
    ('[server]\nlisten = "cdn:80"\ncache_dir = "c"\n' + GOOD_SITE,
     "server.listen", "IP address"),
    (GOOD_SERVER + "disk_cache_mb = -1\n" + GOOD_SITE,
     "server.disk_cache_mb", ">= 0"),
    (GOOD_SERVER + 'max_connections = "many"\n' + GOOD_SITE,
     "server.max_connections", "expected int"),
    (GOOD_SERVER + "colour = 1\n" + GOOD_SITE, "server.colour", "unknown key"),
    (GOOD_SERVER + "max_variants = 0\n" + GOOD_SITE,
     "server.max_variants", ">= 1"),
    (GOOD_SERVER + 'parents = ["ftp://x"]\n' + GOOD_SITE,
     "server.parents[0]", "http"),
    (GOOD_SERVER + '[[site]]\nhostname = "a"\norigin = "http://h/path"\n',
     "site[0].origin", "path"),
    (GOOD_SERVER + GOOD_SITE + GOOD_SITE, "site[1]", "repeated"),
    (GOOD_SERVER + '[[site]]\norigin = "http://h"\n', "site[0].hostname",
     "missing"),
])
def test_bad_configs_are_named(
    tmp_path: Any, text: str, key: str, problem: str
) -> None:
    """A bad file raises ConfigError with the file, the key and why."""
    path = tmp_path / "edge.toml"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        load_config(str(path))

    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(str(path))


def test_good_config_resolves_paths_and_defaults(tmp_path: Any) -> None:
    """cache_dir is relative to the file; optional keys take defaults."""
    path = tmp_path / "edge.toml"
    path.write_text(GOOD_SERVER + GOOD_SITE.replace(
        'hostname = "cdn.example.com"',
        'hostname = "CDN.Example.com."\naliases = ["WWW.cdn.example.com"]'))

    config = load_config(str(path))

    assert config.server.cache_dir == str(tmp_path / "c")
    assert config.server.health_path == "/healthz"
    assert config.server.port == 8080
    assert config.find_site("www.cdn.example.com") is config.sites[0]
    assert config.sites[0].hostname == "cdn.example.com"
