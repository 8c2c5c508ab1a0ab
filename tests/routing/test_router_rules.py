"""Router rules beyond the field cases: network maps, address families,
rotation, weights, consistent hashing, ECS settings, cache and reload."""

from __future__ import annotations

import collections
import ipaddress
import os
from pathlib import Path

import pytest

from dnsrouter.config import load_config
from dnsrouter.errors import GeoIPError
from dnsrouter.pools import weighted_cycle
from dnsrouter.routing import QTYPE_A, QTYPE_AAAA

from .helpers import (
    CASES_TOML,
    DOWN,
    LOCAL,
    RESOLVER,
    ecs,
    load,
    make_router,
    write_config,
)

CDN = "cdn.example.com."
BERLIN = "198.51.100.0/24"
OSAKA = "203.0.113.0/24"

NETMAP = """
[[netmap]]
network = "198.51.100.0/25"
pop = "ap"

[[netmap]]
network = "10.0.0.0/8"
pop = "eu"

[[netmap]]
network = "10.1.0.0/16"
pop = "us"

[[netmap]]
network = "2001:db8:ffff::/48"
pop = "ap"
"""


def pops_of(addresses: tuple[str, ...]) -> set[str]:
    return {a.split(".")[-1][0] for a in addresses}


def test_network_map_decides_before_geoip_with_the_entry_as_scope(tmp_path):
    """A /25 map entry inside Berlin's /24 wins for its half only."""
    router, _, _ = make_router(load(tmp_path, CASES_TOML + NETMAP))

    mapped = router.route(CDN, QTYPE_A, LOCAL, ecs("198.51.100.0/25"))
    other = router.route(CDN, QTYPE_A, LOCAL, ecs("198.51.100.128/25"))

    assert set(mapped.addresses) == {"192.0.2.31", "192.0.2.32"}
    assert mapped.scope_prefix == 25
    assert "192.0.2.21" in other.addresses
    assert other.scope_prefix == 25   # the /24 minus the mapped half


def test_longest_prefix_wins_and_scope_excludes_more_specific_entries(tmp_path):
    router, _, _ = make_router(load(tmp_path, CASES_TOML + NETMAP))

    inner = router.route(CDN, QTYPE_A, LOCAL, ecs("10.1.2.0/24"))
    outer = router.route(CDN, QTYPE_A, LOCAL, ecs("10.2.0.0/24"))

    assert inner.addresses == ("192.0.2.41",)
    assert inner.scope_prefix == 16
    assert "192.0.2.21" in outer.addresses
    # 10.2/24 holds for 10.2/15 (10.0/15 holds the /16 that maps elsewhere).
    assert outer.scope_prefix == 15


def test_ipv6_network_map_entries_apply_to_ipv6_clients(tmp_path):
    router, _, _ = make_router(load(tmp_path, CASES_TOML + NETMAP))

    answer = router.route(CDN, QTYPE_AAAA, LOCAL, ecs("2001:db8:ffff:1::/64"))

    assert answer.addresses == ("2001:db8:a0::31",)
    assert answer.scope_prefix == 48


def test_netmap_file_is_reloaded_when_it_changes(tmp_path):
    netmap = tmp_path / "netmap.txt"
    netmap.write_text("# operator rules\n198.51.100.0/24 ap\n")
    body = CASES_TOML.replace("[routing]", '[routing]\nnetmap_file = "netmap.txt"')
    router, clock, _ = make_router(load(tmp_path, body))
    router.start()
    before = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    netmap.write_text("198.51.100.0/24 us\n")
    os.utime(netmap, ns=(1, 10**18))
    clock.advance(5.0)
    after = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    assert pops_of(before.addresses) == {"3"}
    assert after.addresses == ("192.0.2.41",)


def test_bad_netmap_file_change_keeps_the_old_map(tmp_path):
    netmap = tmp_path / "netmap.txt"
    netmap.write_text("198.51.100.0/24 ap\n")
    body = CASES_TOML.replace("[routing]", '[routing]\nnetmap_file = "netmap.txt"')
    router, _, _ = make_router(load(tmp_path, body))

    netmap.write_text("198.51.100.0/24 nowhere\n")
    os.utime(netmap, ns=(1, 10**18))

    assert router.poll_netmap().result is False  # type: ignore[attr-defined]
    answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))
    assert pops_of(answer.addresses) == {"3"}


def test_bad_netmap_file_is_logged_once_per_change(tmp_path, caplog):
    """Polls every 5 s: a bad file is one error line, not one a poll;
    a later bad change is a line again, and a fixed file is adopted."""
    netmap = tmp_path / "netmap.txt"
    netmap.write_text("198.51.100.0/24 ap\n")
    body = CASES_TOML.replace("[routing]", '[routing]\nnetmap_file = "netmap.txt"')
    router, clock, _ = make_router(load(tmp_path, body))
    router.start()

    netmap.write_text("198.51.100.0/24 nowhere\n")
    os.utime(netmap, ns=(1, 10**18))
    clock.advance(5.0)
    clock.advance(5.0)
    clock.advance(5.0)
    netmap.write_text("198.51.100.0/24 elsewhere\n")
    os.utime(netmap, ns=(1, 2 * 10**18))
    clock.advance(5.0)
    clock.advance(5.0)
    netmap.write_text("198.51.100.0/24 us\n")
    os.utime(netmap, ns=(1, 3 * 10**18))
    clock.advance(5.0)

    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert [("nowhere" in e, "elsewhere" in e) for e in errors] == [
        (True, False), (False, True)
    ]
    answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))
    assert answer.addresses == ("192.0.2.41",)


def test_aaaa_skips_pops_without_ipv6_edges(tmp_path):
    """EU has IPv6 edges only on 21 and 22; with those down, AAAA moves on
    while A still gets eu23."""
    router, clock, prober = make_router(load(tmp_path, CASES_TOML))
    prober.set("eu21", DOWN)
    prober.set("eu22", DOWN)
    router.start()
    clock.advance(0)

    v6 = router.route(CDN, QTYPE_AAAA, LOCAL, ecs(BERLIN))
    v4 = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    assert v6.addresses == ("2001:db8:50::41",)
    assert v4.addresses == ("192.0.2.23",)


def test_no_edge_of_the_family_anywhere_gives_nodata_with_scope_0(tmp_path):
    """An empty answer (the server's NODATA), not a client-specific one."""
    body = "\n".join(
        line for line in CASES_TOML.splitlines() if not line.startswith("ipv6")
    )
    router, _, _ = make_router(load(tmp_path, body))

    answer = router.route(CDN, QTYPE_AAAA, LOCAL, ecs(BERLIN))

    assert answer.addresses == ()
    assert answer.scope_prefix == 0


def test_answers_rotate_through_the_pops_edges(tmp_path):
    """N=2 of three edges: successive answers start at successive edges."""
    body = CASES_TOML.replace("answers = 3", "answers = 2")
    router, _, _ = make_router(load(tmp_path, body))

    answers = [
        router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN)).addresses for _ in range(3)
    ]

    assert [a[0] for a in answers] == ["192.0.2.21", "192.0.2.22", "192.0.2.23"]
    assert all(len(set(a)) == 2 for a in answers)


def test_weights_set_each_edges_share_of_first_places(tmp_path):
    body = CASES_TOML.replace("answers = 3", "answers = 1").replace(
        'name = "eu21"', 'name = "eu21"\nweight = 3'
    )
    router, _, _ = make_router(load(tmp_path, body))

    firsts = collections.Counter(
        router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN)).addresses[0]
        for _ in range(50)
    )

    assert firsts == {"192.0.2.21": 30, "192.0.2.22": 10, "192.0.2.23": 10}


def test_smooth_weighted_cycle_spreads_heavy_edges():
    assert weighted_cycle([5, 1, 1]) == (0, 0, 1, 0, 2, 0, 0)
    assert weighted_cycle([2, 2]) == (0, 1)


def test_qname_hashing_keeps_a_name_on_the_same_edges(tmp_path):
    """Consistent hashing: one name, one edge; names spread over edges;
    only names on a failed edge move."""
    body = CASES_TOML.replace("answers = 3", "answers = 1").replace(
        "[routing]", '[routing]\nedge_selection = "qname-hash"'
    )
    body += '\n[[cdn]]\nname = "img.example.com."\ndefault_pop = "us"\n'
    names = [f"n{i}.example.com." for i in range(40)]
    body += "".join(
        f'\n[[cdn]]\nname = "{n}"\ndefault_pop = "us"\n' for n in names
    )
    router, clock, prober = make_router(load(tmp_path, body))
    router.start()
    clock.advance(0)

    first = {n: router.route(n, QTYPE_A, LOCAL, ecs(BERLIN)).addresses for n in names}
    again = {n: router.route(n, QTYPE_A, LOCAL, ecs(BERLIN)).addresses for n in names}
    prober.set("eu22", DOWN)
    clock.pump([1.0] * 3)
    moved = {n: router.route(n, QTYPE_A, LOCAL, ecs(BERLIN)).addresses for n in names}

    assert first == again
    assert len({a for a in first.values()}) == 3
    for name in names:
        if first[name] != ("192.0.2.22",):
            assert moved[name] == first[name]
        else:
            assert moved[name] != first[name]


def test_ecs_ignore_routes_by_resolver_with_scope_0(tmp_path):
    body = CASES_TOML.replace("[routing]", '[routing]\necs = "ignore"')
    router, _, _ = make_router(load(tmp_path, body))

    answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    assert answer.addresses == ("192.0.2.41",)
    assert answer.scope_prefix == 0


def test_ecs_is_used_only_from_trusted_resolvers(tmp_path):
    body = CASES_TOML.replace(
        "[routing]", '[routing]\necs_trusted = ["192.0.2.0/24"]'
    )
    router, _, _ = make_router(load(tmp_path, body))

    trusted = router.route(CDN, QTYPE_A, RESOLVER, ecs(BERLIN))
    untrusted = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    assert "192.0.2.21" in trusted.addresses and trusted.scope_prefix == 24
    assert untrusted.addresses == ("192.0.2.41",)
    assert untrusted.scope_prefix == 0
    assert "ecs ignored: resolver not in ecs_trusted" in " ".join(
        router.whoami_text(LOCAL, ecs(BERLIN))
    )


def test_whoami_reports_resolver_ecs_and_the_address_used(tmp_path):
    router, _, _ = make_router(load(tmp_path, CASES_TOML))

    text = router.whoami_text(RESOLVER, ecs(BERLIN))

    assert text == [
        "resolver 192.0.2.1", "ecs 198.51.100.0/24",
        "client 198.51.100.0 from ecs",
    ]
    assert router.whoami_text(RESOLVER, None)[1] == "ecs none"


def test_decisions_are_cached_per_network_and_the_cache_is_bounded(tmp_path):
    body = CASES_TOML.replace("[routing]", "[routing]\ncache_size = 16")
    router, _, _ = make_router(load(tmp_path, body))

    for _ in range(3):
        router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))
    for i in range(40):
        router.route(CDN, QTYPE_A, ipaddress.ip_address(f"192.0.2.{i}"), None)

    assert router.counters["decision_cache_hit"] == 2
    assert len(router._cache) <= 16


def test_reload_swaps_config_clears_decisions_and_keeps_edge_health(tmp_path):
    """SIGHUP path: unchanged edges keep their (down) state."""
    path = write_config(tmp_path, CASES_TOML)
    router, clock, prober = make_router(load_config(path))
    prober.set("eu22", DOWN)
    router.start()
    clock.advance(0)
    router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))

    path.write_text(path.read_text() + NETMAP)
    router.reload(load_config(path), geo=router.geo)

    assert router._cache == {}
    assert router.health_states()["eu22"].up is False
    mapped = router.route(CDN, QTYPE_A, LOCAL, ecs("198.51.100.0/25"))
    assert pops_of(mapped.addresses) == {"3"}


def test_reload_with_a_bad_geoip_file_raises_and_keeps_serving(tmp_path):
    """A broken database on SIGHUP is refused; the old state answers."""
    path = write_config(tmp_path, CASES_TOML)
    router, _, _ = make_router(load_config(path))
    (tmp_path / "broken.mmdb").write_bytes(b"not a database")
    path.write_text(path.read_text() + '\n[geoip]\ndatabase = "broken.mmdb"\n')

    with pytest.raises(GeoIPError, match="broken.mmdb"):
        router.reload(load_config(path))

    answer = router.route(CDN, QTYPE_A, LOCAL, ecs(BERLIN))
    assert "192.0.2.21" in answer.addresses
