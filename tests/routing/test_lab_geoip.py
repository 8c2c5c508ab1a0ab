"""The lab's three PoPs with the real GeoLite2 City data."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrouter.routing import QTYPE_A

from .helpers import LAB_TOML, RESOLVER, ecs, load, make_router

# Networks of the Humboldt University Berlin, Princeton and NUS; the
# scopes are the ones gdnsd gives with the same PoPs and database.
CASES = [
    ("141.20.0.0/24", "127.0.0.11", 13),
    ("128.112.0.0/24", "127.0.0.12", 14),
    ("137.132.0.0/24", "127.0.0.13", 16),
]


@pytest.mark.parametrize(("subnet", "edge", "gdnsd_scope"), CASES)
def test_real_networks_go_to_nearest_lab_pop_with_scope_at_least_gdnsds(
    tmp_path: Path, subnet: str, edge: str, gdnsd_scope: int
) -> None:
    """Berlin, Princeton and Singapore get Frankfurt, Ashburn and
    Singapore, with ECS scopes no longer than gdnsd's."""
    router, _, _ = make_router(load(tmp_path, LAB_TOML), database=None)

    answer = router.route("cdn.example.com.", QTYPE_A, RESOLVER, ecs(subnet))

    assert answer.addresses == (edge,)
    assert answer.ttl == 30
    assert 0 < answer.scope_prefix <= gdnsd_scope


def test_new_network_inside_a_decided_scope_block_reuses_the_decision(
    tmp_path: Path,
):
    """141.21.5.0/24 lies in Berlin's widened /13: no second database walk,
    and the block's scope is echoed."""
    router, _, _ = make_router(load(tmp_path, LAB_TOML), database=None)
    first = router.route("cdn.example.com.", QTYPE_A, RESOLVER, ecs("141.20.0.0/24"))

    second = router.route(
        "cdn.example.com.", QTYPE_A, RESOLVER, ecs("141.21.5.0/24")
    )

    assert second.addresses == first.addresses == ("127.0.0.11",)
    assert second.scope_prefix == first.scope_prefix
    assert router.counters["decision_block_hit"] == 1
    assert router.counters["decision_cache_miss"] == 1


def test_while_serving_a_new_network_is_widened_in_the_background(
    tmp_path: Path,
):
    """First answer: the database network's own /16 (true, narrower);
    after the background pass: gdnsd's /13. No database walk on the
    query path."""
    router, clock, _ = make_router(load(tmp_path, LAB_TOML), database=None)
    router.start()
    subnet = ecs("141.20.0.0/24")

    first = router.route("cdn.example.com.", QTYPE_A, RESOLVER, subnet)
    clock.advance(0.1)
    later = router.route("cdn.example.com.", QTYPE_A, RESOLVER, subnet)

    assert (first.addresses, first.scope_prefix) == (("127.0.0.11",), 16)
    assert (later.addresses, later.scope_prefix) == (("127.0.0.11",), 13)
    assert router.counters["decision_widened"] == 1
    router.stop()
    assert clock.getDelayedCalls() == []
