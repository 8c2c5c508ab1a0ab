"""Edge configuration: one TOML file read into frozen dataclasses.

``load_config`` is the only entry point. It validates every key and
raises ``ConfigError`` naming the file, the key and the problem, so the
CLI can print one line and exit 2. Relative paths are resolved against
the directory of the configuration file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from typing import Any
from urllib.parse import urlsplit

from edge.errors import ConfigError

# A request target longer than this gets 414 (RFC 9112 §3: at least
# 8000 octets SHOULD be supported).
DEFAULT_MAX_TARGET_BYTES = 8192
# One header field or the whole header block beyond these gets 431
# (RFC 6585 §5); 8 KiB per field is what most servers allow.
DEFAULT_MAX_FIELD_BYTES = 8192
DEFAULT_MAX_HEADER_BYTES = 32768
# More header lines than this are rejected by the parser with 400.
DEFAULT_MAX_HEADER_LINES = 256
# Seconds a request head may take from its first byte to its end
# (nginx's client_header_timeout default): long enough for any real
# client, short enough that trickled heads cannot pin connections.
DEFAULT_HEADER_TIMEOUT = 60.0
# Seconds a request body may take from when the edge starts reading it
# to its end (408 and close after): the head's allowance again, as
# nginx's client_body_timeout; a client uploading more than a few MB
# over a slow link needs it raised.
DEFAULT_BODY_TIMEOUT = 60.0
# Seconds a stopping edge gives answers in progress to reach their
# clients before it cuts them: most transfers finish well within it,
# and a supervisor's stop timeout (systemd: 90 s) is longer.
DEFAULT_SHUTDOWN_GRACE = 30.0
# Stored Vary variants per URL, the oldest dropped beyond it: every
# lookup scans them, so a client inventing header values must not make
# the list long. Room for codings times a few languages; Apache Traffic
# Server keeps 5 alternates by default.
DEFAULT_MAX_VARIANTS = 16


@dataclasses.dataclass(frozen=True)
class SiteConfig:
    """One property served by the edge: the names it answers and its origin."""

    hostname: str
    aliases: tuple[str, ...]
    origin: str
    # Sort query parameters in the cache key (opt-in: order can matter).
    sort_query: bool = False
    # Seconds to keep 404/410 replies that carry no freshness information.
    negative_ttl: float = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        """All host names (lower case) that select this site."""
        return (self.hostname, *self.aliases)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """The ``[server]`` table."""

    host: str
    port: int
    name: str
    cache_dir: str
    memory_cache_mb: float = 64
    disk_cache_mb: float = 1024
    max_connections: int = 1000
    admin_token: str = ""
    health_path: str = "/healthz"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    max_target_bytes: int = DEFAULT_MAX_TARGET_BYTES
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_lines: int = DEFAULT_MAX_HEADER_LINES
    max_body_mb: float = 64
    max_variants: int = DEFAULT_MAX_VARIANTS
    access_log: bool = True
    # Parent edges (a shield tier) that misses are fetched through, as
    # base URLs; empty means straight to each site's origin.
    parents: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class EdgeConfig:
    """A whole validated configuration."""

    path: str
    server: ServerConfig
    sites: tuple[SiteConfig, ...]

    def find_site(self, host: str) -> SiteConfig | None:
        """Return the site answering ``host`` (already normalised), or None."""
        for site in self.sites:
            if host in site.names:
                return site
        return None


def load_config(path: str) -> EdgeConfig:
    """Read and validate the TOML file at ``path``.

    Raises ``ConfigError`` for an unreadable file, a syntax error or any
    invalid key; never returns a partly valid configuration.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"TOML syntax: {exc}") from None
    except UnicodeDecodeError as exc:
        # TOML is UTF-8 (TOML 1.0 §"Spec"); tomllib raises this itself.
        raise ConfigError(
            path, "-", f"not UTF-8: byte 0x{exc.object[exc.start]:02x} "
            f"at offset {exc.start}",
        ) from None

    base = os.path.dirname(os.path.abspath(path))
    server = _parse_server(path, base, _table(path, data, "server"))
    sites = _parse_sites(path, data.get("site"))
    unknown = set(data) - {"server", "site"}
    if unknown:
        raise ConfigError(path, sorted(unknown)[0], "unknown table or key")

    return EdgeConfig(path=path, server=server, sites=sites)


def _table(path: str, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ConfigError(path, key, "missing table")

    return value


def _get(
    path: str, table: dict[str, Any], prefix: str, key: str, kind: type,
    default: Any = None,
) -> Any:
    """Return ``table[key]`` checked against ``kind``, or ``default``."""
    if key not in table:
        if default is None:
            raise ConfigError(path, f"{prefix}.{key}", "missing")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(
            path, f"{prefix}.{key}",
            f"expected {kind.__name__}, got {value!r}",
        )

    return value


_SERVER_KEYS = {f.name for f in dataclasses.fields(ServerConfig)} - {
    "host", "port",
} | {"listen"}


# Numeric server keys: (name, type, smallest allowed value).
_NUMBERS: tuple[tuple[str, type, float], ...] = (
    ("memory_cache_mb", float, 0), ("disk_cache_mb", float, 0),
    ("connect_timeout", float, 0), ("read_timeout", float, 0),
    ("header_timeout", float, 0.1), ("body_timeout", float, 0.1),
    ("shutdown_grace", float, 0),
    ("max_body_mb", float, 0), ("max_connections", int, 1),
    ("max_target_bytes", int, 1), ("max_field_bytes", int, 1),
    ("max_header_bytes", int, 1), ("max_header_lines", int, 1),
    ("max_variants", int, 1),
)


def _parse_server(path: str, base: str, table: dict[str, Any]) -> ServerConfig:
    for key in table:
        if key not in _SERVER_KEYS:
            raise ConfigError(path, f"server.{key}", "unknown key")
    host, port = parse_listen(path, _get(path, table, "server", "listen", str))
    cache_dir = _get(path, table, "server", "cache_dir", str)
    health_path = _get(path, table, "server", "health_path", str, "/healthz")
    if not health_path.startswith("/"):
        raise ConfigError(path, "server.health_path", "must start with '/'")
    values: dict[str, Any] = {}
    defaults = ServerConfig("", 0, "", "")
    for name, kind, minimum in _NUMBERS:
        values[name] = _get(path, table, "server", name, kind,
                            getattr(defaults, name))
        if values[name] < minimum:
            raise ConfigError(path, f"server.{name}", f"must be >= {minimum}")

    return ServerConfig(
        host=host,
        port=port,
        name=_get(path, table, "server", "name", str, "edge"),
        cache_dir=os.path.join(base, cache_dir),
        admin_token=_get(path, table, "server", "admin_token", str, ""),
        health_path=health_path,
        access_log=_get(path, table, "server", "access_log", bool, True),
        parents=tuple(
            _check_base_url(path, f"server.parents[{index}]", url)
            for index, url in enumerate(
                _get(path, table, "server", "parents", list, [])
            )
        ),
        **values,
    )


def parse_listen(path: str, text: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port`` into an address and a port."""
    key = "server.listen"
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(path, key, f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(
                path, key, f"expected an IP address, got {host!r}"
            ) from None
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(path, key, f"port out of range: {port}")

    return host, port


def _check_base_url(path: str, key: str, url: object) -> str:
    """Return an http(s) base URL without its trailing slash."""
    if not isinstance(url, str):
        raise ConfigError(path, key, f"expected a URL string, got {url!r}")
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, key,
                          f"expected http:// or https:// URL, got {url!r}")
    if parts.path or parts.query:
        raise ConfigError(path, key, "must not have a path")

    return url


_SITE_KEYS = {"hostname", "aliases", "origin", "sort_query", "negative_ttl"}


def _parse_sites(path: str, value: Any) -> tuple[SiteConfig, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, "site", "at least one [[site]] is required")
    sites: list[SiteConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(value):
        prefix = f"site[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(path, prefix, f"expected a table, got {table!r}")
        for key in table:
            if key not in _SITE_KEYS:
                raise ConfigError(path, f"{prefix}.{key}", "unknown key")
        site = _parse_site(path, prefix, table)
        for name in site.names:
            if name in seen:
                raise ConfigError(path, prefix, f"host name {name!r} repeated")
            seen.add(name)
        sites.append(site)

    return tuple(sites)


def _parse_site(path: str, prefix: str, table: dict[str, Any]) -> SiteConfig:
    hostname = _get(path, table, prefix, "hostname", str).lower().rstrip(".")
    aliases = _get(path, table, prefix, "aliases", list, [])
    if not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError(path, f"{prefix}.aliases", "expected host names")
    origin = _check_base_url(path, f"{prefix}.origin",
                             _get(path, table, prefix, "origin", str))
    negative_ttl = _get(path, table, prefix, "negative_ttl", float, 0.0)
    if negative_ttl < 0:
        raise ConfigError(path, f"{prefix}.negative_ttl", "must not be negative")

    return SiteConfig(
        hostname=hostname,
        aliases=tuple(a.lower().rstrip(".") for a in aliases),
        origin=origin,
        sort_query=_get(path, table, prefix, "sort_query", bool, False),
        negative_ttl=negative_ttl,
    )
