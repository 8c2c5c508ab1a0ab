"""Field cases D01, D02 and D11 at the Router's interface, on the test
GeoIP database (Berlin and Osaka networks) and a fake clock."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dnsrouter.health import ProbeResult
from dnsrouter.routing import QTYPE_A, QTYPE_AAAA, Router

from .helpers import CASES_TOML, DOWN, LOCAL, UP, ecs, load, make_router

CDN = "cdn.example.com."
EU = {"192.0.2.21", "192.0.2.22", "192.0.2.23"}
BERLIN = "198.51.100.0/24"
OSAKA = "203.0.113.0/24"


@pytest.fixture
def router(tmp_path: Path) -> Router:
    router, _, _ = make_router(load(tmp_path, CASES_TOML))
    return router


def test_d02_step1_berlin_gets_eu_edges_with_scope_24(router: Router):
    """A geo-dependent answer carries the deciding network's prefix."""
    answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    assert set(answer.addresses) == EU
    assert (answer.ttl, answer.scope_prefix) == (30, 24)


def test_d02_steps2_3_each_network_keeps_its_own_answer(router: Router):
    """Osaka gets AP after Berlin; Berlin again gets EU (no cache mix-up)."""
    first = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))
    osaka = router.route(CDN, QTYPE_A, LOCAL, ecs(OSAKA))
    again = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    assert set(osaka.addresses) == {"192.0.2.31", "192.0.2.32"}
    assert osaka.scope_prefix == 24
    assert set(again.addresses) == set(first.addresses) == EU
    assert again.scope_prefix == first.scope_prefix


def test_d02_step4_without_ecs_the_source_address_decides_default_pop(
    router: Router,
):
    """127.0.0.1 is in no database: the default PoP, scope 0."""
    answer = router.route(CDN, QTYPE_A, LOCAL, None)

    assert answer.addresses == ("192.0.2.41",)
    assert answer.scope_prefix == 0


def test_d02_step6_ipv6_56_gets_eu_v6_edges_with_scope_48(router: Router):
    """SCOPE 48 < SOURCE 56: the /48 database network decided."""
    subnet = ecs("2001:db8:1234:5600::/56")

    answer = router.route(CDN, QTYPE_AAAA, LOCAL, subnet)

    assert set(answer.addresses) == {"2001:db8:e0::21", "2001:db8:e0::22"}
    assert answer.scope_prefix == 48


def test_d01b_source_zero_routes_by_packet_source_with_scope_0(router: Router):
    """SOURCE 0 means: do not use my address (RFC 7871 section 7.1.2)."""
    subnet = ecs("0.0.0.0/0")

    answer = router.route(CDN, QTYPE_A, LOCAL, subnet)

    assert answer.addresses == ("192.0.2.41",)
    assert answer.scope_prefix == 0


def test_d01c_source_25_in_a_24_network_gets_ap_with_scope_24(router: Router):
    """The scope is the deciding network's prefix, shorter than SOURCE."""
    answer = router.route(CDN, QTYPE_A, LOCAL, ecs("203.0.113.128/25"))

    assert set(answer.addresses) == {"192.0.2.31", "192.0.2.32"}
    assert answer.scope_prefix == 24


def test_unknown_ecs_network_goes_to_default_pop_with_its_block_scope(
    router: Router,
):
    """192.0.2.0/24 is absent: default PoP, and a scope that still holds."""
    answer = router.route(CDN, QTYPE_A, LOCAL, ecs("192.0.2.0/24"))

    assert answer.addresses == ("192.0.2.41",)
    block = ipaddress.ip_network(f"192.0.2.0/{answer.scope_prefix}", strict=False)
    assert not block.overlaps(ipaddress.ip_network(BERLIN))
    assert not block.overlaps(ipaddress.ip_network(OSAKA))


class TestD11Health:
    """Field case D11 on a fake clock: interval 1 s, timeout 0.5 s, fall 3,
    rise 2, no jitter; the first probe round runs at t=0."""

    def setup_router(self, tmp_path: Path):
        router, clock, prober = make_router(load(tmp_path, CASES_TOML))
        router.start()
        clock.advance(0)
        return router, clock, prober

    def berlin(self, router: Router) -> set[str]:
        return set(router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN)).addresses)

    def test_1_all_healthy_answers_every_eu_edge(self, tmp_path: Path):
        router, _, _ = self.setup_router(tmp_path)

        assert self.berlin(router) == EU

    @pytest.mark.parametrize(
        "failure", [DOWN, ProbeResult(False, detail="refused"), None],
        ids=["503", "refused", "hangs-past-timeout"],
    )
    def test_2_failing_edge_leaves_after_fall_within_the_bound(
        self, tmp_path: Path, failure: ProbeResult | None
    ):
        """Present after 1 or 2 failures, absent no later than
        fall x interval + timeout after the first failure."""
        router, clock, prober = self.setup_router(tmp_path)
        prober.set("eu22", failure)

        clock.advance(0.5)
        present = []
        for _ in range(3):
            # Probe rounds start at t = 1, 2, 3; look 0.5 s (the timeout)
            # after each. Clock runs a call scheduled during advance() from
            # the advanced time, hence two half steps.
            clock.pump([0.5, 0.5])
            present.append("192.0.2.22" in self.berlin(router))

        assert present == [True, True, False]
        first_failure = 1.0
        assert clock.seconds() - first_failure <= 3 * 1.0 + 0.5
        assert router.health_states()["eu22"].up is False

    def test_3_recovered_edge_returns_only_after_rise_successes(
        self, tmp_path: Path
    ):
        router, clock, prober = self.setup_router(tmp_path)
        prober.set("eu22", DOWN)
        clock.pump([1.0] * 3)
        assert "192.0.2.22" not in self.berlin(router)

        prober.set("eu22", UP)
        clock.advance(1.0)
        after_one = self.berlin(router)
        clock.advance(1.0)

        assert "192.0.2.22" not in after_one
        assert "192.0.2.22" in self.berlin(router)

    def test_4_flapping_edge_is_never_removed(self, tmp_path: Path):
        """200/503 alternating for 20 s: never three failures in a row."""
        router, clock, prober = self.setup_router(tmp_path)
        answers = set()
        for second in range(20):
            prober.set("eu23", UP if second % 2 else DOWN)
            clock.advance(1.0)
            answers.add(frozenset(self.berlin(router)))

        assert answers == {frozenset(EU)}

    def test_5_whole_pop_down_sends_berlin_to_next_nearest_with_scope(
        self, tmp_path: Path
    ):
        """Ashburn (6,700 km) is nearer Berlin than Tokyo (8,900 km)."""
        router, clock, prober = self.setup_router(tmp_path)
        for name in ("eu21", "eu22", "eu23"):
            prober.set(name, DOWN)
        clock.pump([1.0] * 3)

        answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

        assert answer.addresses == ("192.0.2.41",)
        assert (answer.ttl, answer.scope_prefix) == (30, 24)

    def test_6_everything_down_fails_open_to_nearest_pop_with_short_ttl(
        self, tmp_path: Path
    ):
        """Never an empty answer: the nearest PoP's configured edges,
        TTL at most the normal 30 s, counted."""
        router, clock, prober = self.setup_router(tmp_path)
        for edge in router.config.edges:
            prober.set(edge.name, DOWN)
        clock.pump([1.0] * 3)

        answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

        assert set(answer.addresses) == EU
        assert answer.ttl == router.config.routing.fail_open_ttl < 30
        assert router.counters["fail_open"] == 1

    def test_7_before_the_first_probe_every_edge_is_assumed_up(
        self, tmp_path: Path
    ):
        """The documented initial state; the first result then decides."""
        router, clock, prober = make_router(load(tmp_path, CASES_TOML))
        prober.set("eu22", DOWN)
        router.start()

        before = self.berlin(router)
        clock.advance(0)

        assert before == EU
        assert self.berlin(router) == EU - {"192.0.2.22"}


def test_draining_edge_takes_no_new_clients_but_is_not_down(tmp_path: Path):
    """A draining edge leaves the answers while its health stays up."""
    router, clock, prober = make_router(load(tmp_path, CASES_TOML))
    prober.set("eu21", ProbeResult(True, draining=True, detail="503 draining"))
    router.start()
    clock.advance(0)

    answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    assert set(answer.addresses) == EU - {"192.0.2.21"}
    assert router.health_states()["eu21"].up


def test_full_pop_keeps_its_share_and_spills_the_rest_to_next_nearest(
    tmp_path: Path,
):
    """EU at twice its capacity keeps half of new clients; US gets the rest."""
    router, clock, prober = make_router(load(tmp_path, CASES_TOML))
    for name in ("eu21", "eu22", "eu23"):
        prober.set(
            name, ProbeResult(True, connections=2000, max_connections=1000)
        )
    router.start()
    clock.advance(0)

    answers = [
        router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN)).addresses for _ in range(10)
    ]

    to_us = sum(1 for a in answers if a == ("192.0.2.41",))
    assert to_us == 5
    assert all(set(a) <= EU for a in answers if a != ("192.0.2.41",))


def test_one_full_edge_leaves_the_answers_while_its_pop_has_room(
    tmp_path: Path,
):
    """An overloaded edge takes no new clients; no spill while others can."""
    router, clock, prober = make_router(load(tmp_path, CASES_TOML))
    prober.set("eu23", ProbeResult(True, overloaded=True))
    router.start()
    clock.advance(0)

    answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    assert set(answer.addresses) == EU - {"192.0.2.23"}


def test_everything_full_still_answers_from_the_nearest_pop(tmp_path: Path):
    """With every PoP full there is nowhere to spill: stay nearest."""
    router, clock, prober = make_router(load(tmp_path, CASES_TOML))
    for edge in router.config.edges:
        prober.set(edge.name, ProbeResult(True, overloaded=True))
    router.start()
    clock.advance(0)

    answers = {
        router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN)).addresses for _ in range(4)
    }

    assert all(set(a) == EU for a in answers)
    assert router.counters["fail_open"] == 0
