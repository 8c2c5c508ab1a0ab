"""Query dispatch: bytes of a query in, bytes of the reply (or None) out.

Steps for every message: drop what must not be answered, parse, check
EDNS, decide (static zone, CDN name, debug name), assemble.  Decisions
for static names are encoded once per (name, type) and kept as reply
bodies; CDN bodies are kept per routing answer, so the common query costs
a hand parse, two dictionary hits and a join.

The Responder is transport-free and pure apart from its caches and the
router it asks; the Twisted protocols in server.py feed it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dnsrouter import names, rdata, wire
from dnsrouter.errors import MalformedEcsError, MalformedPacketError
from dnsrouter.lograte import RateLimitedLog
from dnsrouter.wire import Body, Query
from dnsrouter.zone import (
    FORMERR,
    NOERROR,
    NOTIMP,
    REFUSED,
    SERVFAIL,
    RRset,
    ZoneSet,
)

log = logging.getLogger("dnsrouter.query")

Transport = Literal["udp", "tcp"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CLASS_IN, CLASS_CH = 1, 3
ECS_OPTION_CODE = 8  # RFC 7871 section 6; B's ecs module uses the same
ZONE_TRANSFERS = (251, 252)  # IXFR, AXFR: not offered (RFC 5936 2.2.1)
MAIL_QTYPES = (253, 254)  # MAILB, MAILA: obsolete, NOTIMP as in BIND

# Body caches are bounded so random names cannot grow memory; when full
# they are emptied, which costs one re-encode per name afterwards.
MAX_CACHED_BODIES = 50_000

# Malformed-packet warnings per second; the internet sends garbage at line
# rate and one line per packet would drown the log.
MALFORMED_LOG_RATE = 10

_DEBUG_ID = frozenset(
    names.from_text(n, None) for n in ("id.server.", "hostname.bind.")
)
_DEBUG_VERSION = frozenset(
    names.from_text(n, None) for n in ("version.server.", "version.bind.")
)


class RouterLike(Protocol):
    """What the responder needs of routing.Router: the calls it makes."""

    def is_cdn_name(self, qname: str) -> bool: ...

    def route(
        self, qname: str, qtype: int, resolver: Any, subnet: Any
    ) -> Any: ...

    def whoami_text(self, resolver: Any, subnet: Any) -> list[str]: ...


@dataclass(frozen=True)
class EcsCodec:
    """The ECS functions of dnsrouter.ecs, injectable for tests."""

    parse: Callable[[bytes], Any]
    encode: Callable[[Any, int], bytes]

    @classmethod
    def default(cls) -> "EcsCodec":
        from dnsrouter import ecs

        return cls(ecs.parse_client_subnet, ecs.encode_client_subnet)


@dataclass(frozen=True)
class ResponderSettings:
    """Server identity and limits taken from the [server] config."""

    server_id: str = ""
    version: str = ""
    max_udp_payload: int = 1232
    whoami_name: str | None = None
    cdn_names: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Any) -> "ResponderSettings":
        return cls(
            config.server_id,
            config.version,
            config.max_udp_payload,
            config.whoami_name,
            tuple(config.cdn_names),
        )


@dataclass(frozen=True)
class _Decision:
    rcode: int
    aa: bool
    body: Body
    scope: int = 0


class Responder:
    """Answers queries for a fixed set of zones and a router.

    Build a new Responder on reload; its caches belong to one zone set.
    """

    def __init__(
        self,
        zones: ZoneSet,
        router: RouterLike | None,
        settings: ResponderSettings,
        ecs: EcsCodec | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.zones = zones
        zones.add_existing_names(names.from_text(n, None) for n in settings.cdn_names)
        self.router = router
        self.settings = settings
        self.ecs = ecs if ecs is not None else EcsCodec.default()
        self.max_udp = settings.max_udp_payload
        self.server_id = settings.server_id.encode("ascii", "replace")
        self.whoami_key = (
            names.from_text(settings.whoami_name.lower(), None)
            if settings.whoami_name
            else None
        )
        self._static: dict[tuple[bytes, int], _Decision] = {}
        self._cdn_names: dict[bytes, str | None] = {}
        self._cdn_bodies: dict[tuple[bytes, int, Any], _Decision] = {}
        self._malformed = RateLimitedLog(
            log, "query malformed", MALFORMED_LOG_RATE, clock
        )
        # Decoded per distinct wire value: resolvers send the same few
        # addresses and ECS options over and over.
        self._resolvers: dict[str, IPAddress] = {}
        self._subnets: dict[bytes, Any] = {}
        self._opts: dict[tuple[bool, bool, bytes | None, int, int], bytes] = {}

    def respond(self, data: bytes, peer: str, transport: Transport) -> bytes | None:
        """The reply to one message, or None to send nothing.

        Never raises: a malformed query gets FORMERR (RFC 1035 4.1.1),
        and an unexpected error is logged with its traceback and answered
        SERVFAIL, because it is a bug of ours and not of the peer.
        """
        if wire.is_droppable(data):
            return None
        try:
            query = wire.parse_query(data)
        except MalformedPacketError as exc:
            self._malformed.warn("peer=%s reason=%s", peer, exc)
            return wire.header_only(data, FORMERR)
        try:
            return self.answer(query, peer, transport)
        except Exception:
            log.exception("query failed peer=%s", peer)
            return wire.header_only(data, SERVFAIL)

    def answer(self, query: Query, peer: str, transport: Transport) -> bytes:
        """Decide and assemble the reply to a well-formed query."""
        edns = query.edns
        if transport == "tcp":
            limit = wire.TCP_MAX
        else:
            limit = wire.udp_limit(edns, self.max_udp)
        if edns is not None and edns.version > 0:
            # RFC 6891 section 6.1.3: BADVERS, question kept, before any
            # cache or data is consulted.
            return self._error(query, wire.BADVERS, limit)
        if query.opcode != 0:
            return self._error(query, NOTIMP, limit)

        subnet = None
        ecs_data = edns.find_option(ECS_OPTION_CODE) if edns is not None else None
        if ecs_data is not None:
            try:
                subnet = self._subnet(ecs_data)
            except MalformedEcsError as exc:
                # RFC 7871 section 7.1.1: FORMERR for a malformed option.
                self._malformed.warn("peer=%s reason=%s", peer, exc)
                return self._error(query, FORMERR, limit)

        decision = self.decide(query, peer, subnet)

        return wire.assemble(
            query.id,
            wire.reply_flags(query.flags, decision.aa, decision.rcode),
            query.question,
            decision.body,
            self._opt(query, 0, subnet, decision.scope),
            limit,
        )

    def _subnet(self, data: bytes) -> Any:
        """The parsed ECS option, from a bounded cache of good ones."""
        subnet = self._subnets.get(data)
        if subnet is None:
            subnet = self.ecs.parse(data)
            _bounded_put(self._subnets, data, subnet)

        return subnet

    def _resolver(self, peer: str) -> IPAddress:
        """The peer's address object, from a bounded cache."""
        address = self._resolvers.get(peer)
        if address is None:
            address = resolver_address(peer)
            _bounded_put(self._resolvers, peer, address)

        return address

    def decide(self, query: Query, peer: str, subnet: Any) -> _Decision:
        """RCODE, AA and body for a query: meta types, class CH, CDN
        names, the whoami name, then the static zones (RFC 1034 4.3.2)."""
        qtype = query.qtype
        if qtype == rdata.OPT or 128 <= qtype <= 250:
            # RFC 6895 section 3.1: OPT, TKEY, TSIG and the reserved meta
            # range are never questions; BIND answers FORMERR too.
            return _FORMERR
        if qtype in MAIL_QTYPES:
            return _NOTIMP
        if query.qclass != CLASS_IN:
            return self._chaos(query) if query.qclass == CLASS_CH else _REFUSED
        if qtype in ZONE_TRANSFERS:
            return _REFUSED
        qkey = query.qname.lower()

        cdn_name = self._cdn_name(qkey)
        if cdn_name is not None:
            return self._cdn(query, qkey, cdn_name, peer, subnet)
        if qkey == self.whoami_key:
            return self._whoami(query, peer, subnet)

        decision = self._static.get((qkey, qtype))
        if decision is None:
            decision = self._static_decision(query.qname, qtype)
            _bounded_put(self._static, (qkey, qtype), decision)

        return decision

    def _static_decision(self, qname: bytes, qtype: int) -> _Decision:
        result = self.zones.resolve(qname, qtype)
        referral = not result.aa and result.rcode == NOERROR
        body = wire.encode_body(
            qname, (result.answer, result.authority, result.additional), referral
        )

        return _Decision(result.rcode, result.aa, body)

    def _cdn_name(self, qkey: bytes) -> str | None:
        """The router's text name for a folded wire name, if it is a CDN name."""
        try:
            return self._cdn_names[qkey]
        except KeyError:
            pass
        text = None
        if self.router is not None:
            candidate = names.to_text(qkey)
            if self.router.is_cdn_name(candidate):
                text = candidate
        _bounded_put(self._cdn_names, qkey, text)

        return text

    def _cdn(
        self, query: Query, qkey: bytes, cdn_name: str, peer: str, subnet: Any
    ) -> _Decision:
        """A and AAAA from the router; ANY gets one of them (RFC 8482
        section 4.1: a non-empty subset of what exists, A first, AAAA
        when the name has no IPv4 edge); every other type is NODATA."""
        qtype = query.qtype
        if qtype not in (rdata.A, rdata.AAAA, rdata.ANY) or self.router is None:
            return self._nodata(query.qname, qkey, 0)

        resolver = self._resolver(peer)
        if qtype == rdata.ANY:
            qtype = rdata.A
            answer = self.router.route(cdn_name, qtype, resolver, subnet)
            if not answer.addresses:
                qtype = rdata.AAAA
                answer = self.router.route(cdn_name, qtype, resolver, subnet)
        else:
            answer = self.router.route(cdn_name, qtype, resolver, subnet)
        if not answer.addresses:
            return self._nodata(query.qname, qkey, answer.scope_prefix)
        key = (qkey, qtype, answer)
        decision = self._cdn_bodies.get(key)
        if decision is None:
            family = socket.AF_INET if qtype == rdata.A else socket.AF_INET6
            rrset = RRset(
                query.qname,
                qtype,
                answer.ttl,
                tuple(socket.inet_pton(family, a) for a in answer.addresses),
            )
            body = wire.encode_body(query.qname, ((rrset,), (), ()))
            decision = _Decision(NOERROR, True, body, answer.scope_prefix)
            _bounded_put(self._cdn_bodies, key, decision)

        return decision

    def _nodata(self, qname: bytes, qkey: bytes, scope: int) -> _Decision:
        """NODATA with the SOA of the enclosing zone (RFC 2308 section 2.2)."""
        key = (qkey, -1, scope)
        decision = self._cdn_bodies.get(key)
        if decision is None:
            zone = self.zones.find_zone(qkey)
            authority = (zone.negative_soa(),) if zone is not None else ()
            body = wire.encode_body(qname, ((), authority, ()))
            decision = _Decision(NOERROR, True, body, scope)
            _bounded_put(self._cdn_bodies, key, decision)

        return decision

    def _whoami(self, query: Query, peer: str, subnet: Any) -> _Decision:
        """TXT with the resolver and ECS as seen; TTL 0 so none caches it."""
        if query.qtype not in (rdata.TXT, rdata.ANY) or self.router is None:
            return self._nodata(query.qname, query.qname.lower(), 0)
        lines = self.router.whoami_text(self._resolver(peer), subnet)
        rrset = RRset(query.qname, rdata.TXT, 0, (_txt(lines),))

        return _answer(query.qname, rrset)

    def _chaos(self, query: Query) -> _Decision:
        """id.server and version.server in class CH (RFC 4892 section 2)."""
        qkey = query.qname.lower()
        if qkey in _DEBUG_ID:
            text = self.settings.server_id
        elif qkey in _DEBUG_VERSION:
            text = self.settings.version
        else:
            return _REFUSED
        if not text:
            return _REFUSED
        if query.qtype not in (rdata.TXT, rdata.ANY):
            return _Decision(NOERROR, True, wire.EMPTY_BODY)
        rrset = RRset(query.qname, rdata.TXT, 0, (_txt([text]),), CLASS_CH)

        return _answer(query.qname, rrset)

    def _opt(self, query: Query, ext_rcode: int, subnet: Any, scope: int) -> bytes:
        """The reply's OPT: only when the query had one (RFC 6891 section 7)."""
        edns = query.edns
        if edns is None:
            return b""
        nsid = bool(self.server_id) and edns.find_option(wire.OPT_NSID) is not None
        ecs_data = edns.find_option(ECS_OPTION_CODE) if subnet is not None else None
        key = (edns.do, nsid, ecs_data, scope, ext_rcode)
        opt = self._opts.get(key)
        if opt is None:
            options = wire.option(wire.OPT_NSID, self.server_id) if nsid else b""
            if subnet is not None:
                # RFC 7871 7.2.1: echo with our scope; none if not asked.
                echo = self.ecs.encode(subnet, scope)
                options += wire.option(ECS_OPTION_CODE, echo)
            opt = wire.opt_record(self.max_udp, ext_rcode, edns.do, options)
            _bounded_put(self._opts, key, opt)

        return opt

    def _error(self, query: Query, rcode: int, limit: int) -> bytes:
        """An error reply with the question and OPT; the extended part of
        the RCODE goes into the OPT (RFC 6891 section 6.1.3)."""
        flags = wire.reply_flags(query.flags, False, rcode & 0xF)
        opt = self._opt(query, rcode >> 4, None, 0)

        return wire.assemble(
            query.id, flags, query.question, wire.EMPTY_BODY, opt, limit
        )


_REFUSED = _Decision(REFUSED, False, wire.EMPTY_BODY)
_FORMERR = _Decision(FORMERR, False, wire.EMPTY_BODY)
_NOTIMP = _Decision(NOTIMP, False, wire.EMPTY_BODY)


def _answer(qname: bytes, rrset: RRset) -> _Decision:
    """An authoritative answer of one RRset owned by the question name."""
    return _Decision(NOERROR, True, wire.encode_body(qname, ((rrset,), (), ())))


def _bounded_put(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Store in a cache that is emptied when it reaches MAX_CACHED_BODIES."""
    if len(cache) >= MAX_CACHED_BODIES:
        cache.clear()
    cache[key] = value


def _txt(lines: list[str]) -> bytes:
    """TXT RDATA from text lines, each cut to one character-string."""
    out = b""
    for line in lines or [""]:
        data = line.encode("utf-8")[:255]
        out += bytes((len(data),)) + data

    return out


def resolver_address(peer: str) -> IPAddress:
    """The resolver's address; IPv4-mapped IPv6 peers count as IPv4."""
    address = ipaddress.ip_address(peer.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped

    return address
