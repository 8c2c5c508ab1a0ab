"""Shared pieces of the DNS core tests: the fixture zone, a fake router
and a way to ask a Responder a question and read the reply."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rdatatype

from dnsrouter.responder import Responder, ResponderSettings
from dnsrouter.routing import RouteAnswer
from dnsrouter.zone import ZoneSet, load_zone_dir

REPO = Path(__file__).resolve().parents[2]
ZONES = REPO / "zones"
RESOLVER = "192.0.2.1"

EU_V4 = ("192.0.2.21", "192.0.2.22", "192.0.2.23")
US_V4 = ("192.0.2.41",)
US_V6 = ("2001:db8:50::41",)


@dataclass
class FakeRouter:
    """Answers cdn.example.com: EU edges for 198.51.100.0/24 subnets
    (scope 24), the US edge otherwise; no address at all when `empty`,
    no IPv4 address when `ipv6_only`; records every call."""

    calls: list[tuple[str, int, Any, Any]] = field(default_factory=list)
    empty: bool = False
    ipv6_only: bool = False

    def is_cdn_name(self, qname: str) -> bool:
        return qname == "cdn.example.com."

    def route(self, qname: str, qtype: int, resolver: Any, subnet: Any) -> RouteAnswer:
        self.calls.append((qname, qtype, resolver, subnet))
        if self.empty:
            return RouteAnswer((), 30, 0)
        if qtype == 28:
            return RouteAnswer(US_V6, 30, 0)
        if self.ipv6_only:
            return RouteAnswer((), 30, 0)
        if subnet is not None and str(subnet.network) == "198.51.100.0/24":
            return RouteAnswer(EU_V4, 30, 24)

        return RouteAnswer(US_V4, 30, 0)

    def whoami_text(self, resolver: Any, subnet: Any) -> list[str]:
        return ["resolver %s" % resolver]


def fixture_zones() -> ZoneSet:
    return load_zone_dir(ZONES)


def make_responder(router: Any = None, zones: ZoneSet | None = None) -> Responder:
    settings = ResponderSettings(
        server_id="router-1",
        version="pycdn-dnsrouter",
        max_udp_payload=1232,
        whoami_name="whoami.example.com.",
        cdn_names=("cdn.example.com.",),
    )

    return Responder(zones or fixture_zones(), router or FakeRouter(), settings)


def ask_bytes(
    responder: Responder, data: bytes, transport: str = "udp", peer: str = RESOLVER
) -> bytes | None:
    return responder.respond(data, peer, transport)  # type: ignore[arg-type]


def ask(
    responder: Responder,
    name: str,
    rdtype: str = "A",
    transport: str = "udp",
    **query_args: Any,
) -> dns.message.Message:
    """Send a dnspython-built query (no EDNS unless asked) and parse the reply."""
    query_args.setdefault("use_edns", False)
    query = dns.message.make_query(name, rdtype, **query_args)
    query.flags &= ~dns.flags.RD
    reply = ask_bytes(responder, query.to_wire(), transport)
    assert reply is not None

    return dns.message.from_wire(reply)


def rrsets_text(section: list[Any]) -> set[str]:
    """A section as a set of one-line records, for order-free comparison."""
    return {line for rrset in section for line in rrset.to_text().splitlines()}
