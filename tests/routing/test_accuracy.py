"""Routing accuracy on real GeoLite2 City data.

For 600 networks sampled from the database with a fixed seed, the PoP the
router answers equals a brute-force nearest-PoP computation, and every
ECS scope is true: addresses probed across the whole scope block (its
ends and random points inside) get the same answer, decided afresh.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from dnsrouter.decision import DEFAULT_COUNTRY_ACCURACY_KM, Decider
from dnsrouter.geo import distance_km
from dnsrouter.geoip import GeoDatabase
from dnsrouter.routing import QTYPE_A, Router

from .helpers import LAB_TOML, RESOLVER, ecs, load, make_router

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SAMPLES = 600
SAMPLES_V6 = 300
PROBES_PER_SCOPE = 12

# A denser worldwide layout, where scopes are harder to get right.
WORLD_POPS = {
    "fra": (50.11, 8.68), "lon": (51.51, -0.13), "iad": (39.04, -77.49),
    "sjc": (37.34, -121.89), "gru": (-23.55, -46.63), "sin": (1.29, 103.85),
    "nrt": (35.68, 139.69), "syd": (-33.87, 151.21), "jnb": (-26.2, 28.05),
    "bom": (19.08, 72.88),
}


def world_toml() -> str:
    parts = ["[routing]\nanswers = 1\n",
             '[[cdn]]\nname = "cdn.example.com."\ndefault_pop = "iad"\n']
    for number, (name, (lat, lon)) in enumerate(WORLD_POPS.items(), start=1):
        parts.append(
            f'[[pop]]\nname = "{name}"\nlatitude = {lat}\nlongitude = {lon}\n'
            f'[[edge]]\nname = "{name}1"\npop = "{name}"\n'
            f'ipv4 = "192.0.2.{number}"\n'
            f'health_url = "http://192.0.2.{number}/health"\n'
        )
    return "\n".join(parts)


@pytest.fixture(scope="module")
def geolite() -> GeoDatabase:
    return GeoDatabase()


@pytest.fixture(scope="module")
def sampled(geolite: GeoDatabase) -> list[ipaddress.IPv4Network]:
    """Distinct database networks with a location, from random addresses."""
    rng = random.Random(20180703)
    networks: dict[ipaddress.IPv4Network, None] = {}
    while len(networks) < SAMPLES:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        match = geolite.lookup(address)
        if match.record is not None:
            networks[match.network] = None  # type: ignore[index]
    return list(networks)


@pytest.fixture(scope="module")
def sampled_v6(geolite: GeoDatabase) -> list[ipaddress.IPv6Network]:
    """Distinct IPv6 database networks with a location: random addresses
    in the RIRs' main /12 blocks (most of the space is unallocated)."""
    rng = random.Random(20180703)
    blocks = [0x2A00, 0x2400, 0x2600, 0x2800, 0x2C00]
    networks: dict[ipaddress.IPv6Network, None] = {}
    for _ in range(40_000):
        high = rng.choice(blocks) | rng.getrandbits(4)
        address = ipaddress.IPv6Address((high << 112) | rng.getrandbits(112))
        match = geolite.lookup(address)
        if match.record is not None:
            networks[match.network] = None  # type: ignore[index]
        if len(networks) == SAMPLES_V6:
            break
    return list(networks)


def brute_force(
    router: Router, geolite: GeoDatabase, address: IPAddress
) -> set[str]:
    """The PoPs a correct router may pick for `address`: the nearest one;
    for a country-level record, every PoP within its accuracy radius of
    the nearest (the documented spreading rule)."""
    record = geolite.lookup(address).record
    if record is None:
        return {router.config.cdns[0].default_pop}
    distances = {
        pop.name: distance_km(
            record.latitude, record.longitude, pop.latitude, pop.longitude
        )
        for pop in router.config.pops
    }
    nearest = min(distances.values())
    if not record.is_country_level:
        return {n for n, d in distances.items() if d == nearest}
    slack = record.accuracy_km or DEFAULT_COUNTRY_ACCURACY_KM
    return {n for n, d in distances.items() if d <= nearest + slack}


def answered_pop(router: Router, address: str, prefix: int) -> tuple[str, int]:
    answer = router.route(
        "cdn.example.com.", QTYPE_A, RESOLVER, ecs(f"{address}/{prefix}")
    )
    edge = answer.addresses[0]
    pop = next(e.pop for e in router.config.edges if e.ipv4 == edge)
    return pop, answer.scope_prefix


def unwidened(router: Router) -> Callable[[IPAddress], str]:
    """The PoP for one address, decided afresh with no scope widening (so
    the check does not lean on the code under test's widening)."""
    decider = Decider(router.geo, router.netmap, router.ranker, widen_budget=0)
    default = router.config.cdns[0].default_pop

    def pop_for(address: IPAddress) -> str:
        pops = decider.decide(address).pops
        return pops[0] if pops else default

    return pop_for


@pytest.mark.parametrize(
    ("layout", "family"), [("lab", 4), ("world", 4), ("lab", 6), ("world", 6)]
)
def test_sampled_networks_get_nearest_pop_and_true_scopes(
    tmp_path: Path, geolite: GeoDatabase, sampled, sampled_v6, layout: str,
    family: int,
):
    body = LAB_TOML if layout == "lab" else world_toml()
    networks = sampled if family == 4 else sampled_v6
    router, _, _ = make_router(load(tmp_path, body), database=None)
    checker = unwidened(router)
    rng = random.Random(7)
    wrong_pop, wrong_scope = [], []
    for network in networks:
        address = network.network_address
        pop, scope = answered_pop(router, str(address), network.max_prefixlen)
        if pop not in brute_force(router, geolite, address):
            wrong_pop.append((network, pop))
        block = ipaddress.ip_network(f"{address}/{scope}", strict=False)
        assert scope <= network.prefixlen, (network, scope)
        probes = {block.network_address, block.broadcast_address}
        probes |= {
            block.network_address + rng.randrange(block.num_addresses)
            for _ in range(PROBES_PER_SCOPE)
        }
        for probe in probes:
            probe_pop = checker(probe)
            if probe_pop != pop:
                wrong_scope.append((network, scope, probe, probe_pop, pop))

    assert len(networks) >= (SAMPLES if family == 4 else SAMPLES_V6)
    assert wrong_pop == []
    assert wrong_scope == []


def every_network_in(
    geolite: GeoDatabase, block: ipaddress.IPv4Network
) -> list[ipaddress.IPv4Address]:
    """The first address of every database network inside `block`."""
    firsts = []
    address = int(block.network_address)
    end = int(block.broadcast_address)
    while address <= end:
        network = geolite.lookup(ipaddress.IPv4Address(address)).network
        firsts.append(ipaddress.IPv4Address(address))
        address = int(network.broadcast_address) + 1
    return firsts


def test_scopes_hold_for_every_database_network_inside_them(
    tmp_path: Path, geolite: GeoDatabase, sampled
):
    """Exhaustive check on 150 samples: walk every GeoIP network inside
    each widened scope block and decide it afresh."""
    router, _, _ = make_router(load(tmp_path, LAB_TOML), database=None)
    checker = unwidened(router)
    widened = 0
    for network in sampled[:150]:
        address = network.network_address
        pop, scope = answered_pop(router, str(address), 32)
        block = ipaddress.ip_network(f"{address}/{scope}", strict=False)
        widened += scope < network.prefixlen
        for first in every_network_in(geolite, block):
            assert checker(first) == pop, (network, scope, first)

    assert widened > 50   # widening does happen on real data
