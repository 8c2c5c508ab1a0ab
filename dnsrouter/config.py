"""The router's TOML configuration, validated into frozen dataclasses.

`load_config` is the only entry point. Every problem is reported as a
`ConfigError` whose message reads `FILE: KEY: PROBLEM, got VALUE`, where KEY
is a dotted path such as `pop.eu.latitude` (array-of-table entries are named
by their `name` key, or by their index when they have none). Unknown keys
are errors too: a misspelt `intervall` silently ignored is worse than a
refusal. Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dnsrouter.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6891 section 6.2.5: below 512 a payload size means 512; 1232 is the
# DNS flag day 2020 value that avoids IP fragmentation on common paths.
DEFAULT_UDP_PAYLOAD = 1232

# A fail-open answer hands out edges whose health is unknown or bad; a
# short TTL lets resolvers come back soon for a better one.
DEFAULT_FAIL_OPEN_TTL = 10

# Distinct client networks whose routing decision is remembered; at about
# 300 bytes each this bounds the cache near 20 MB.
DEFAULT_DECISION_CACHE = 65536

ECS_MODES = ("use", "ignore")
EDGE_SELECTIONS = ("rotate", "qname-hash")
CHECK_KINDS = ("http", "tcp")


@dataclass(frozen=True)
class PopConfig:
    """A point of presence: a named location that holds edges."""

    name: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class EdgeConfig:
    """One edge server; at least one of `ipv4` and `ipv6` is set."""

    name: str
    pop: str
    ipv4: str | None
    ipv6: str | None
    health_url: str
    weight: int = 1
    check: str = "http"          # "http" GET of health_url, or "tcp" connect
    health_host: str | None = None  # Host header; None: the URL's host


@dataclass(frozen=True)
class CdnConfig:
    """A CDN hostname the router answers dynamically."""

    name: str          # absolute, lower-case
    default_pop: str   # for clients that GeoIP and the network map miss
    # Where it was configured, e.g. `cdn["cdn.example.com."]`, for messages.
    key: str = field(default="", compare=False)


@dataclass(frozen=True)
class NetmapEntry:
    """An operator's explicit rule: clients in `network` go to `pop`."""

    network: IPNetwork
    pop: str


@dataclass(frozen=True)
class GeoIPConfig:
    """Where GeoIP data comes from and how coarse records are treated."""

    database: Path | None  # None: GeoLite2 City of maxminddb-geolite2
    # ISO country code -> PoP names in order of preference, used for
    # records that know the country but not the city.
    country_pops: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class RoutingConfig:
    """How answers for CDN names are chosen."""

    answers: int = 2
    ttl: int = 30
    fail_open_ttl: int = DEFAULT_FAIL_OPEN_TTL
    ecs: str = "use"
    ecs_trusted: tuple[IPNetwork, ...] = ()   # empty: trust every resolver
    edge_selection: str = "rotate"
    netmap_file: Path | None = None
    cache_size: int = DEFAULT_DECISION_CACHE


@dataclass(frozen=True)
class HealthConfig:
    """Health check timing and hysteresis, shared by every edge."""

    interval: float = 2.0
    timeout: float = 1.0
    fall: int = 3
    rise: int = 2
    jitter: float = 0.1   # each delay is shortened by up to jitter x interval
    healthy_statuses: tuple[int, ...] = tuple(range(200, 300))
    host: str | None = None  # Host header for every edge without health_host


@dataclass(frozen=True)
class RouterConfig:
    """The whole validated configuration of one router process."""

    path: Path
    listen: tuple[tuple[str, int], ...]
    zones_dir: Path
    server_id: str
    version: str
    max_udp_payload: int
    tcp_idle_timeout: float
    tcp_max_connections: int
    workers: int
    cdn_names: tuple[str, ...]
    whoami_name: str | None
    geoip: GeoIPConfig
    routing: RoutingConfig
    health: HealthConfig
    cdns: tuple[CdnConfig, ...]
    pops: tuple[PopConfig, ...]
    edges: tuple[EdgeConfig, ...]
    netmap: tuple[NetmapEntry, ...]


class _Reader:
    """Typed access to one TOML table, raising errors that name the key."""

    def __init__(self, file: str, key: str, table: Mapping[str, Any]) -> None:
        self.file = file
        self.key = key
        self.table = table
        self.used: set[str] = set()

    def fail(self, key: str, problem: str, value: Any = None) -> ConfigError:
        where = f"{self.key}.{key}" if self.key else key
        got = "" if value is None else f", got {_show(value)}"

        return ConfigError(f"{self.file}: {where}: {problem}{got}")

    def raw(self, key: str) -> Any:
        self.used.add(key)

        return self.table.get(key)

    def string(self, key: str, default: str | None = None) -> str:
        value = self.raw(key)
        if value is None:
            if default is None:
                raise self.fail(key, "is required (a string)")
            return default
        if not isinstance(value, str):
            raise self.fail(key, "must be a string", value)

        return value

    def optional_string(self, key: str) -> str | None:
        if self.raw(key) is None:
            return None

        return self.string(key)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer from {low} to {high}", value)
        if not low <= value <= high:
            raise self.fail(key, f"must be an integer from {low} to {high}", value)

        return value

    def number(
        self, key: str, default: float | None, low: float, high: float
    ) -> float:
        value = self.raw(key)
        problem = f"must be a number between {_num(low)} and {_num(high)}"
        if value is None:
            if default is None:
                raise self.fail(key, f"is required ({problem[5:]})")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, problem, value)
        if not (math.isfinite(value) and low <= value <= high):
            raise self.fail(key, problem, value)

        return float(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            raise self.fail(key, f"must be one of {options}", value)

        return value

    def _list_of(self, key: str, kind: type, expected: str) -> list[Any]:
        """The list at `key` ([] when absent) whose items are all `kind`."""
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(item, kind) for item in value
        ):
            raise self.fail(key, f"must be {expected}", value)

        return value

    def string_list(self, key: str) -> list[str]:
        return self._list_of(key, str, "a list of strings")

    def sub(self, key: str, label: str | None = None) -> _Reader:
        value = self.raw(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table", value)
        path = f"{self.key}.{label or key}" if self.key else label or key

        return _Reader(self.file, path, value)

    def tables(self, key: str) -> list[_Reader]:
        value = self._list_of(key, dict, f"an array of tables ([[{key}]])")
        readers = []
        for index, item in enumerate(value):
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                path = f"{key}[{index}]"
            elif "." in name:
                path = f'{key}["{name}"]'
            else:
                path = f"{key}.{name}"
            readers.append(_Reader(self.file, path, item))

        return readers

    def check_unknown(self) -> None:
        for key in self.table:
            if key not in self.used:
                raise self.fail(key, "unknown key")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'

    return repr(value)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def load_config(path: str | Path) -> RouterConfig:
    """Read and validate the TOML file at `path`.

    Blocks on file I/O (call it off the hot path: at start and on SIGHUP).
    Raises ConfigError naming the file, the key and the problem.
    """
    path = Path(path)
    name = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{name}: cannot read: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{name}: not UTF-8 text: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{name}: not valid TOML: {error}") from error

    return parse_config(data, path)


def parse_config(data: Mapping[str, Any], path: Path) -> RouterConfig:
    """Validate already-parsed TOML `data` as if read from `path`."""
    root = _Reader(str(path), "", data)
    base = path.parent
    server = _parse_server(root.sub("server"), base)

    pops = tuple(_parse_pop(item) for item in root.tables("pop"))
    pop_names = _unique(root, "pop", [pop.name for pop in pops])
    edge_readers = root.tables("edge")
    edges = tuple(_parse_edge(item, pop_names) for item in edge_readers)
    _unique(root, "edge", [edge.name for edge in edges])
    _check_shared_addresses(edge_readers, edges)
    zones_dir = server["zones_dir"]
    populated = {edge.pop for edge in edges}
    cdns = tuple(
        _parse_cdn(item, pop_names, populated, zones_dir)
        for item in root.tables("cdn")
    )
    _unique(root, "cdn", [cdn.name for cdn in cdns])
    if cdns and not edges:
        raise root.fail("edge", "CDN names need at least one [[edge]]")

    routing_reader = root.sub("routing")
    routing = _parse_routing(routing_reader, base)
    whoami = routing_reader.optional_string("whoami")
    if whoami is not None:
        whoami = _parse_name(routing_reader, "whoami", whoami)
    routing_reader.check_unknown()
    netmap = tuple(_parse_netmap(item, pop_names) for item in root.tables("netmap"))

    config = RouterConfig(
        path=path,
        **server,
        cdn_names=tuple(cdn.name for cdn in cdns),
        whoami_name=whoami,
        geoip=_parse_geoip(root.sub("geoip"), base, pop_names),
        routing=routing,
        health=_parse_health(root.sub("health")),
        cdns=cdns,
        pops=pops,
        edges=edges,
        netmap=netmap,
    )
    root.check_unknown()

    return config


def _parse_server(server: _Reader, base: Path) -> dict[str, Any]:
    """The [server] table as RouterConfig keyword arguments."""
    listen = tuple(
        _parse_listen(server, item) for item in server.string_list("listen")
    ) or (("127.0.0.1", 8053),)
    zones_dir = base / server.string("zones_dir", "zones")
    if not zones_dir.is_dir():
        raise server.fail("zones_dir", "directory does not exist", str(zones_dir))
    values = {
        "listen": listen,
        "zones_dir": zones_dir,
        "server_id": server.string("server_id", "dnsrouter"),
        "version": server.string("version", "pycdn-dnsrouter"),
        "max_udp_payload": server.integer(
            "max_udp_payload", DEFAULT_UDP_PAYLOAD, 512, 65535
        ),
        "tcp_idle_timeout": server.number("tcp_idle_timeout", 10.0, 0.1, 3600),
        "tcp_max_connections": server.integer(
            "tcp_max_connections", 256, 1, 65535
        ),
        "workers": server.integer("workers", 1, 1, 256),
    }
    server.check_unknown()

    return values


def _unique(root: _Reader, key: str, names: list[str]) -> set[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise root.fail(key, "names must be unique, repeated", name)
        seen.add(name)

    return seen


def _parse_listen(reader: _Reader, item: str) -> tuple[str, int]:
    problem = 'entries must look like "127.0.0.1:53" or "[::1]:53"'
    host, sep, port = item.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise reader.fail("listen", problem, item)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise reader.fail("listen", problem, item) from None

    return str(address), int(port)


def _parse_name(reader: _Reader, key: str, value: str) -> str:
    """A domain name made absolute and lower-case (RFC 4343 section 2)."""
    name = value.strip().lower()
    if not name.endswith("."):
        name += "."
    labels = name[:-1].split(".")
    if name == "." or any(not 0 < len(label) < 64 for label in labels):
        raise reader.fail(key, "must be a domain name", value)
    if len(name) > 254:
        raise reader.fail(key, "must be at most 253 characters", value)

    return name


def _parse_label(reader: _Reader) -> str:
    """The `name` of a [[pop]] or [[edge]]: it appears in logs, explain
    output and other keys, so it must say something."""
    name = reader.string("name")
    if not name.strip():
        raise reader.fail("name", "must not be empty")

    return name


def _parse_pop(reader: _Reader) -> PopConfig:
    pop = PopConfig(
        name=_parse_label(reader),
        latitude=reader.number("latitude", None, -90, 90),
        longitude=reader.number("longitude", None, -180, 180),
    )
    reader.check_unknown()

    return pop


def _parse_pop_ref(reader: _Reader, key: str, pops: set[str]) -> str:
    value = reader.string(key)
    if value not in pops:
        raise reader.fail(key, "names no [[pop]]", value)

    return value


def _parse_address(
    reader: _Reader, key: str, version: int
) -> str | None:
    value = reader.optional_string(key)
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise reader.fail(key, f"must be an IPv{version} address", value)

    return str(address)


def _parse_edge(reader: _Reader, pops: set[str]) -> EdgeConfig:
    ipv4 = _parse_address(reader, "ipv4", 4)
    ipv6 = _parse_address(reader, "ipv6", 6)
    if ipv4 is None and ipv6 is None:
        raise reader.fail("ipv4", "an edge needs ipv4, ipv6 or both")
    url = reader.string("health_url")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise reader.fail("health_url", "must be an http:// URL", url)
    try:
        parts.port
    except ValueError:
        raise reader.fail("health_url", "has a bad port", url) from None
    edge = EdgeConfig(
        name=_parse_label(reader),
        pop=_parse_pop_ref(reader, "pop", pops),
        ipv4=ipv4,
        ipv6=ipv6,
        health_url=url,
        weight=reader.integer("weight", 1, 1, 1000),
        check=reader.choice("check", "http", CHECK_KINDS),
        health_host=reader.optional_string("health_host"),
    )
    reader.check_unknown()

    return edge


def _check_shared_addresses(
    readers: list[_Reader], edges: tuple[EdgeConfig, ...]
) -> None:
    """Two edges with one address of a family would be one server counted
    twice: answers would repeat it and its health would be probed twice
    under two names."""
    owners: dict[str, str] = {}
    for reader, edge in zip(readers, edges):
        for key, address in (("ipv4", edge.ipv4), ("ipv6", edge.ipv6)):
            if address is None:
                continue
            first = owners.setdefault(address, edge.name)
            if first != edge.name:
                raise reader.fail(key, f"same address as edge {first}", address)


def _zone_files(zones_dir: Path) -> dict[str, Path]:
    """Zone origin -> file, as the zone loader names them: `<origin>.zone`."""
    suffix = ".zone"

    return {
        entry.name[: -len(suffix)].lower().rstrip(".") + ".": entry
        for entry in zones_dir.iterdir()
        if entry.name.endswith(suffix)
    }


def _parse_cdn(
    reader: _Reader, pops: set[str], populated: set[str], zones_dir: Path
) -> CdnConfig:
    name = _parse_name(reader, "name", reader.string("name"))
    zone_files = _zone_files(zones_dir)
    if not any(name == o or name.endswith("." + o) for o in zone_files):
        raise reader.fail(
            "name", f"lies in no zone served from {zones_dir}", name
        )
    if name in zone_files:
        # Known from the file names alone, so refused with the config;
        # clashes with zone data are found once zones load (cdnzones).
        raise reader.fail(
            "name",
            f"is the apex of zone file {zone_files[name]}, whose SOA and NS "
            "a CDN name would hide; use a name below it",
            name,
        )
    default_pop = _parse_pop_ref(reader, "default_pop", pops)
    if default_pop not in populated:
        # A slip: clients GeoIP cannot place would start from a PoP that
        # can never answer, and be sent by distance from it instead.
        raise reader.fail(
            "default_pop", "names a [[pop]] with no [[edge]]", default_pop
        )
    cdn = CdnConfig(name=name, default_pop=default_pop, key=reader.key)
    reader.check_unknown()

    return cdn


def _parse_network(reader: _Reader, key: str, value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise reader.fail(
            key, "must be a network like 192.0.2.0/24 with no host bits", value
        ) from None


def _parse_netmap(reader: _Reader, pops: set[str]) -> NetmapEntry:
    entry = NetmapEntry(
        network=_parse_network(reader, "network", reader.string("network")),
        pop=_parse_pop_ref(reader, "pop", pops),
    )
    reader.check_unknown()

    return entry


def _parse_routing(reader: _Reader, base: Path) -> RoutingConfig:
    ttl = reader.integer("ttl", 30, 0, 86400)
    trusted = tuple(
        _parse_network(reader, "ecs_trusted", item)
        for item in reader.string_list("ecs_trusted")
    )
    netmap_file = reader.optional_string("netmap_file")

    return RoutingConfig(
        answers=reader.integer("answers", 2, 1, 64),
        ttl=ttl,
        fail_open_ttl=reader.integer(
            "fail_open_ttl", min(DEFAULT_FAIL_OPEN_TTL, ttl), 0, ttl
        ),
        ecs=reader.choice("ecs", "use", ECS_MODES),
        ecs_trusted=trusted,
        edge_selection=reader.choice("edge_selection", "rotate", EDGE_SELECTIONS),
        netmap_file=None if netmap_file is None else base / netmap_file,
        cache_size=reader.integer("cache_size", DEFAULT_DECISION_CACHE, 16, 10**7),
    )


def _parse_health(reader: _Reader) -> HealthConfig:
    interval = reader.number("interval", 2.0, 0.05, 3600)
    statuses = reader.raw("healthy_statuses")
    if statuses is None:
        healthy: tuple[int, ...] = tuple(range(200, 300))
    elif isinstance(statuses, list) and statuses and all(
        isinstance(s, int) and 100 <= s <= 599 for s in statuses
    ):
        healthy = tuple(statuses)
    else:
        raise reader.fail(
            "healthy_statuses", "must be a list of HTTP status codes", statuses
        )
    health = HealthConfig(
        interval=interval,
        timeout=reader.number("timeout", min(1.0, interval), 0.01, interval),
        fall=reader.integer("fall", 3, 1, 100),
        rise=reader.integer("rise", 2, 1, 100),
        jitter=reader.number("jitter", 0.1, 0.0, 0.5),
        healthy_statuses=healthy,
        host=reader.optional_string("host"),
    )
    reader.check_unknown()

    return health


def _parse_geoip(reader: _Reader, base: Path, pops: set[str]) -> GeoIPConfig:
    database = reader.string("database", "")
    country_reader = reader.sub("country_pops")
    country_pops = []
    for code in country_reader.table:
        names = country_reader.string_list(code)
        if len(code) != 2 or not code.isalpha() or not code.isupper():
            raise country_reader.fail(
                code, "keys must be ISO 3166 country codes such as DE"
            )
        for pop in names:
            if pop not in pops:
                raise country_reader.fail(code, "names no [[pop]]", pop)
        if not names:
            raise country_reader.fail(code, "must list at least one PoP")
        country_pops.append((code, tuple(names)))
    path = base / database if database else None
    if path is not None and not path.is_file():
        raise reader.fail("database", "file does not exist", str(path))
    geoip = GeoIPConfig(
        database=path,
        country_pops=tuple(country_pops),
    )
    reader.check_unknown()

    return geoip


def is_trusted_resolver(
    networks: tuple[IPNetwork, ...],
) -> Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]:
    """A predicate telling whether ECS from a resolver address is trusted.

    An empty list trusts everyone, the RFC 7871 default for a public
    authoritative server.
    """
    if not networks:
        return lambda address: True

    return lambda address: any(address in network for network in networks)
