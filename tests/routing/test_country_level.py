"""Records with a country but no city (the coordinates are the country's
centre) must not pile a whole country onto one PoP; plus resolver address
forms and fail-open logging."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from dnsrouter.config import PopConfig
from dnsrouter.decision import Decider, PopRanker
from dnsrouter.geoip import GeoRecord
from dnsrouter.netmap import NetworkMap
from dnsrouter.routing import QTYPE_A

from .helpers import CASES_TOML, DOWN, LOCAL, UP, load, make_router

# The United States' centre as GeoLite2 gives it, accuracy 1000 km.
US_CENTRE = GeoRecord(37.751, -97.822, 1000, "US", None, True)
KANSAS_CITY = GeoRecord(39.10, -94.58, 20, "US", "Kansas City", False)

POPS = (
    PopConfig("us-east", 39.04, -77.49),    # Ashburn, 1,780 km from centre
    PopConfig("us-west", 37.34, -121.89),   # San Jose, 2,120 km from centre
    PopConfig("eu", 50.11, 8.68),
)


class FakeGeo:
    """Every /16 in 10.0.0.0/8 is a separate country-level network, and
    11.0.0.0/8 is one city-level network."""

    def lookup_prefix(self, address):
        if int(address) >> 24 == 10:
            return US_CENTRE, 16
        if int(address) >> 24 == 11:
            return KANSAS_CITY, 8
        return None, 8


def decider(country_pops=None) -> Decider:
    geo: Any = FakeGeo()   # duck-types GeoDatabase.lookup_prefix
    return Decider(geo, NetworkMap([]), PopRanker(POPS), country_pops)


def first_pops(decide: Decider, count: int = 64) -> list[str]:
    return [
        decide.decide(ipaddress.IPv4Address(f"10.{i}.0.0")).pops[0]
        for i in range(count)
    ]


def test_country_centre_spreads_networks_over_pops_within_accuracy():
    """Both US PoPs lie within 1000 km of the nearest one's distance: the
    country's networks are split between them, stably."""
    chosen = first_pops(decider())

    assert set(chosen) == {"us-east", "us-west"}
    assert 16 <= chosen.count("us-west") <= 48
    assert chosen == first_pops(decider())
    assert "eu" not in chosen


def test_operator_country_list_overrides_the_spreading():
    """[geoip.country_pops] US = ["us-west"] sends country-level US
    networks to us-west first, then by distance."""
    decide = decider({"US": ("us-west",)})

    decision = decide.decide(ipaddress.IPv4Address("10.7.0.0"))

    assert decision.pops == ("us-west", "us-east", "eu")


def test_city_records_are_not_spread():
    """A city-level record goes to the PoP nearest the city."""
    decision = decider().decide(ipaddress.IPv4Address("11.1.2.3"))

    assert decision.pops[0] == "us-east"


def test_country_level_scopes_stop_at_their_own_network():
    """Neighbouring country-level networks may be assigned elsewhere, so
    the scope never covers a neighbour with a different list."""
    decide = decider()
    for i in range(0, 64, 2):
        decision = decide.decide(ipaddress.IPv4Address(f"10.{i}.0.0"))
        block = ipaddress.ip_network(f"10.{i}.0.0/{decision.scope}", strict=False)
        for j in range(0, 256):
            inner = ipaddress.IPv4Address(f"10.{j}.0.0")
            if inner in block:
                assert decide.decide(inner, widen=False).pops == decision.pops


def test_ipv4_mapped_resolver_addresses_are_treated_as_ipv4(tmp_path):
    """A dual-stack listener's ::ffff:198.51.100.7 is Berlin's IPv4."""
    router, _, _ = make_router(load(tmp_path, CASES_TOML))
    mapped = ipaddress.ip_address("::ffff:198.51.100.7")

    answer = router.route("cdn.example.com.", QTYPE_A, mapped, None)

    assert "192.0.2.21" in answer.addresses


def test_fail_open_is_logged_once_and_its_end_too(tmp_path, caplog):
    """One warning per outage, however many answers; one line at its end."""
    router, clock, prober = make_router(load(tmp_path, CASES_TOML))
    for edge in router.config.edges:
        prober.set(edge.name, DOWN)
    router.start()
    clock.advance(0)
    caplog.set_level(logging.INFO, logger="dnsrouter.routing")

    for _ in range(3):
        router.route("cdn.example.com.", QTYPE_A, LOCAL, None)
    prober.set("us41", UP)
    clock.pump([1.0, 1.0])
    answer = router.route("cdn.example.com.", QTYPE_A, LOCAL, None)

    messages = [
        r.getMessage() for r in caplog.records if r.name == "dnsrouter.routing"
    ]
    assert [m.split(":")[0] for m in messages] == ["fail open", "fail open ended"]
    assert answer.addresses == ("192.0.2.41",) and not answer.failed_open
    assert router.counters["fail_open"] == 3
