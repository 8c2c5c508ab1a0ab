"""Shared builders for routing tests: config files, a fake prober, clients."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

from twisted.internet import defer, task

from dnsrouter.config import EdgeConfig, RouterConfig, load_config
from dnsrouter.ecs import ClientSubnet, client_subnet_from_text
from dnsrouter.geoip import GeoDatabase
from dnsrouter.health import ProbeResult
from dnsrouter.routing import Router

REPO = Path(__file__).resolve().parents[2]
TEST_DB = REPO / "geodata" / "test-city.mmdb"

ZONE = """$ORIGIN example.com.
$TTL 300
@   IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 300
@   IN NS  ns1
ns1 IN A   192.0.2.53
"""

# The PoPs and edges of the routing field cases (D01, D02, D11).
CASES_TOML = """
[routing]
answers = 3
ttl = 30

[health]
interval = 1.0
timeout = 0.5
fall = 3
rise = 2
jitter = 0.0

[[cdn]]
name = "cdn.example.com."
default_pop = "us"

[[pop]]
name = "eu"
latitude = 50.11
longitude = 8.68

[[pop]]
name = "ap"
latitude = 35.68
longitude = 139.69

[[pop]]
name = "us"
latitude = 39.04
longitude = -77.49

[[edge]]
name = "eu21"
pop = "eu"
ipv4 = "192.0.2.21"
ipv6 = "2001:db8:e0::21"
health_url = "http://192.0.2.21/health"

[[edge]]
name = "eu22"
pop = "eu"
ipv4 = "192.0.2.22"
ipv6 = "2001:db8:e0::22"
health_url = "http://192.0.2.22/health"

[[edge]]
name = "eu23"
pop = "eu"
ipv4 = "192.0.2.23"
health_url = "http://192.0.2.23/health"

[[edge]]
name = "ap31"
pop = "ap"
ipv4 = "192.0.2.31"
ipv6 = "2001:db8:a0::31"
health_url = "http://192.0.2.31/health"

[[edge]]
name = "ap32"
pop = "ap"
ipv4 = "192.0.2.32"
health_url = "http://192.0.2.32/health"

[[edge]]
name = "us41"
pop = "us"
ipv4 = "192.0.2.41"
ipv6 = "2001:db8:50::41"
health_url = "http://192.0.2.41/health"
"""

# The lab's layout: Frankfurt, Ashburn, Singapore.
LAB_TOML = """
[routing]
answers = 1

[[cdn]]
name = "cdn.example.com."
default_pop = "ashburn"

[[pop]]
name = "frankfurt"
latitude = 50.11
longitude = 8.68

[[pop]]
name = "ashburn"
latitude = 39.04
longitude = -77.49

[[pop]]
name = "singapore"
latitude = 1.29
longitude = 103.85

[[edge]]
name = "fra"
pop = "frankfurt"
ipv4 = "127.0.0.11"
health_url = "http://127.0.0.11:8080/healthz"

[[edge]]
name = "iad"
pop = "ashburn"
ipv4 = "127.0.0.12"
health_url = "http://127.0.0.12:8080/healthz"

[[edge]]
name = "sin"
pop = "singapore"
ipv4 = "127.0.0.13"
health_url = "http://127.0.0.13:8080/healthz"
"""


def write_config(directory: Path, body: str, header: str = "") -> Path:
    """Write router.toml plus a zones dir serving example.com; return it."""
    zones = directory / "zones"
    zones.mkdir(exist_ok=True)
    (zones / "example.com.zone").write_text(ZONE)
    path = directory / "router.toml"
    path.write_text(f'[server]\nzones_dir = "zones"\n{header}\n{body}')

    return path


def load(directory: Path, body: str, header: str = "") -> RouterConfig:
    """Write and load a config."""
    return load_config(write_config(directory, body, header))


class FakeProber:
    """Answers probes from a per-edge script; a None result never fires
    (the probe hangs until the checker's timeout cancels it)."""

    def __init__(self) -> None:
        self.results: dict[str, ProbeResult | None] = {}
        self.calls: list[str] = []

    def set(self, name: str, result: ProbeResult | None) -> None:
        self.results[name] = result

    def __call__(self, edge: EdgeConfig) -> defer.Deferred[ProbeResult]:
        self.calls.append(edge.name)
        result = self.results.get(edge.name, ProbeResult(True, detail="fake"))
        if result is None:
            return defer.Deferred()

        return defer.succeed(result)


UP = ProbeResult(True, detail="HTTP 200")
DOWN = ProbeResult(False, detail="HTTP 503")


def make_router(
    config: RouterConfig, database: Path | None = TEST_DB
) -> tuple[Router, task.Clock, FakeProber]:
    """A router on a fake clock with a scriptable prober."""
    clock = task.Clock()
    prober = FakeProber()
    router = Router.from_config(
        config, clock, geo=GeoDatabase(database), prober=prober,
        rng=random.Random(7),
    )

    return router, clock, prober


def ecs(text: str) -> ClientSubnet:
    """The ClientSubnet `dig +subnet=text` sends."""
    return client_subnet_from_text(text)


RESOLVER = ipaddress.ip_address("192.0.2.1")
LOCAL = ipaddress.ip_address("127.0.0.1")
