"""`dnsrouter explain`: the whole routing decision for one client, in text.

Shows the address used (and why), what decided (network map entry, GeoIP
record with country, city, coordinates, network and accuracy, or nothing
and so the default PoP), every PoP in order of preference with its
distance and its edges' health, and the answer with its ECS scope and TTL.
Without `--probe` the health shown is the documented initial state (every
edge assumed up); with it, every edge is probed once first.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

from dnsrouter.config import load_config
from dnsrouter.decision import SOURCE_DEFAULT, SOURCE_MAP, Decision
from dnsrouter.ecs import ClientSubnet, client_subnet_from_text, encode_client_subnet
from dnsrouter.errors import ConfigError
from dnsrouter.health import EdgeHealth
from dnsrouter.routing import QTYPE_A, QTYPE_AAAA, Router

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def explain_text(
    router: Router,
    resolver: IPAddress,
    qname: str,
    qtype: int,
    subnet: ClientSubnet | None,
) -> str:
    """The explanation as printed; routes the query for real (so rotation
    and counters move as for a query)."""
    qname = qname.lower().rstrip(".") + "."
    if not router.is_cdn_name(qname):
        names = ", ".join(router.config.cdn_names)
        raise ConfigError(f"{qname} is not a configured CDN name ({names})")
    address, uses_ecs = router.client_address(resolver, subnet)
    decision = router.decide_uncached(address)
    answer = router.route(qname, qtype, resolver, subnet)
    cdn = next(c for c in router.config.cdns if c.name == qname)
    order = decision.pops or router.ranker.from_pop(cdn.default_pop)

    lines = [_client_line(resolver, subnet, address, uses_ecs)]
    lines += _decided_lines(decision, cdn.default_pop)
    lines.append("PoPs in order of preference:")
    lines += _pop_lines(router, decision, order, 6 if qtype == QTYPE_AAAA else 4)
    kind = "AAAA" if qtype == QTYPE_AAAA else "A"
    shown = ", ".join(answer.addresses) or "(none: NODATA)"
    lines.append(f"answer:   {qname} {answer.ttl} IN {kind} {shown}")
    if answer.failed_open:
        lines.append("          fail open: no edge takes clients anywhere; "
                     "configured edges of the nearest PoP, short TTL")
    if subnet is not None:
        echo = encode_client_subnet(subnet, answer.scope_prefix).hex()
        lines.append(f"scope:    /{answer.scope_prefix} (ECS option data {echo})")
    else:
        lines.append("scope:    no ECS in the query, none in the reply")
    lines.append(f"ttl:      {answer.ttl}")

    return "\n".join(lines) + "\n"


def _client_line(
    resolver: IPAddress, subnet: ClientSubnet | None, address: IPAddress,
    uses_ecs: bool,
) -> str:
    if uses_ecs and subnet is not None:
        return (f"client:   {address} (ECS {subnet.network} sent by resolver "
                f"{resolver})")
    if subnet is not None:
        return f"client:   {address} (resolver address; ECS {subnet.network} not used)"

    return f"client:   {address} (resolver address; no ECS)"


def _decided_lines(decision: Decision, default_pop: str) -> list[str]:
    if decision.source == SOURCE_MAP and decision.map_entry is not None:
        entry = decision.map_entry
        return [f"decided:  network map {entry.network} -> {entry.pop}"]
    if decision.source == SOURCE_DEFAULT:
        return [
            f"decided:  nothing known about {decision.block}: default PoP "
            f"{default_pop}"
        ]
    record = decision.record
    assert record is not None
    place = ", ".join(p for p in (record.city, record.country) if p) or "unknown"
    accuracy = "unknown" if record.accuracy_km is None else f"{record.accuracy_km} km"
    lines = [
        f"decided:  GeoIP {place} ({record.latitude:.4f}, {record.longitude:.4f}), "
        f"network {decision.block}, accuracy {accuracy}"
    ]
    if record.is_country_level:
        lines.append(
            "          country-level record: spread over PoPs within its "
            "accuracy, or the [geoip.country_pops] list"
        )

    return lines


def _pop_lines(
    router: Router, decision: Decision, order: tuple[str, ...], family: int
) -> list[str]:
    record = decision.record
    distances = (
        router.ranker.distances(record.latitude, record.longitude)
        if record is not None else {}
    )
    states = router.health_states()
    lines = []
    for rank, pop in enumerate(order, start=1):
        distance = f"{distances[pop]:,.0f} km" if pop in distances else "-"
        edges = [e for e in router.config.edges if e.pop == pop]
        shown = ", ".join(
            f"{e.name} {_health_word(states.get(e.name))}"
            + ("" if (e.ipv4 if family == 4 else e.ipv6) else f" (no IPv{family})")
            for e in edges
        )
        lines.append(f"  {rank}. {pop:<12} {distance:>10}   {shown}")

    return lines


def _health_word(health: EdgeHealth | None) -> str:
    if health is None:
        return "unknown"
    if not health.probed:
        return "assumed-up"
    if not health.up:
        return f"down ({health.detail})"
    if health.draining:
        return "draining"
    if health.is_full:
        return "full"

    return "up"


def main(
    config_path: str,
    client: str,
    name: str,
    qtype: str = "A",
    subnet: str | None = None,
    probe: bool = False,
) -> int:
    """CLI entry: print the explanation; 2 on bad arguments or config."""
    try:
        resolver = ipaddress.ip_address(client)
        ecs = client_subnet_from_text(subnet) if subnet else None
    except ValueError as error:
        print(f"dnsrouter explain: {error}", file=sys.stderr)
        return 2
    config = load_config(config_path)
    code = QTYPE_AAAA if qtype.upper() == "AAAA" else QTYPE_A
    if probe:
        from twisted.internet import reactor

        router = Router.from_config(config, reactor)
        _run_probes(router, reactor)
    else:
        router = Router.from_config(config, None)
    print(explain_text(router, resolver, name, code, ecs), end="")

    return 0


def _run_probes(router: Router, reactor: Any) -> None:
    """One probe of every edge on the real reactor, then stop it."""
    done = router.health.probe_all_once()
    done.addBoth(lambda _: reactor.stop())
    reactor.run()
