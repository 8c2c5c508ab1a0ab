"""Zone store and the authoritative lookup of RFC 1034 section 4.3.2.

A Zone maps case-folded wire names to their RRsets.  Every ancestor of an
owner up to the apex is present as a node, possibly with no RRsets: these
are the empty non-terminals that exist per RFC 4592 section 2.2.2.  Names
with NS records below the apex are zone cuts; data at or below a cut is
only glue and never answered authoritatively.

`ZoneSet.resolve` runs the algorithm for one question and returns a
Resolution: RCODE, AA and the RRsets of each section.  Replies are kept
minimal, like BIND with `minimal-responses yes`: no NS RRset beside
positive answers and additional data only as glue in referrals.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dnsrouter import names, rdata, zonefile
from dnsrouter.errors import ZoneError
from dnsrouter.zonefile import Record

log = logging.getLogger("dnsrouter.zone")

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, YXDOMAIN = range(7)
DS = 43
DNAME = 39

# A CNAME chain longer than this is cut short; BIND stops at 16 too.
MAX_CNAME_CHAIN = 16

_SINGLETONS = (rdata.SOA, rdata.CNAME)
_WILDCARD = b"\x01*"


@dataclass(frozen=True)
class RRset:
    """Records sharing owner, type and class; one TTL (RFC 2181 5.2)."""

    name: bytes
    rtype: int
    ttl: int
    rdatas: tuple[bytes, ...]
    rclass: int = 1


@dataclass(frozen=True)
class Resolution:
    """The outcome of resolving one question in our zones."""

    rcode: int
    aa: bool
    answer: tuple[RRset, ...] = ()
    authority: tuple[RRset, ...] = ()
    additional: tuple[RRset, ...] = ()


REFUSAL = Resolution(REFUSED, False)


@dataclass
class Zone:
    """One loaded zone: apex, nodes keyed by folded name, cuts."""

    origin: bytes
    nodes: dict[bytes, dict[int, RRset]]
    cuts: frozenset[bytes]
    source: str = ""
    warnings: tuple[str, ...] = ()
    key: bytes = field(init=False)
    dnames: frozenset[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.key = names.key_of(self.origin)
        self.dnames = frozenset(k for k, n in self.nodes.items() if DNAME in n)

    @property
    def soa(self) -> RRset:
        return self.nodes[self.key][rdata.SOA]

    def negative_soa(self) -> RRset:
        """The SOA for negative answers, TTL = min(TTL, MINIMUM) (RFC 2308
        section 3)."""
        soa = self.soa
        minimum = struct.unpack("!I", soa.rdatas[0][-4:])[0]

        return replace(soa, ttl=min(soa.ttl, minimum))

    def find_cut(self, key: bytes, qtype: int) -> bytes | None:
        """The topmost zone cut at or above `key`, below the apex.

        A DS query at the cut itself belongs to the parent side (RFC 4035
        section 3.1.4.1), so the cut name does not count for it.
        """
        if not self.cuts:
            return None
        chain = []
        while len(key) > len(self.key):
            chain.append(key)
            key = key[1 + key[0] :]
        for index, ancestor in enumerate(reversed(chain)):
            if ancestor in self.cuts:
                if qtype == DS and index == len(chain) - 1:
                    return None
                return ancestor

        return None

    def find_dname(self, key: bytes) -> bytes | None:
        """The DNAME owner strictly above `key`, at or below the apex.

        A DNAME redirects the descendants of its owner, not the owner
        itself (RFC 6672 section 2.3).
        """
        if not self.dnames:
            return None
        while len(key) > len(self.key):
            key = key[1 + key[0] :]
            if key in self.dnames:
                return key

        return None

    def closest_encloser(self, key: bytes) -> bytes:
        """The deepest existing ancestor of a name absent from the zone."""
        while key not in self.nodes:
            key = key[1 + key[0] :]

        return key

    def addresses_for(self, ns: RRset, below: bytes | None = None) -> tuple[RRset, ...]:
        """A and AAAA RRsets of NS targets held in this zone.

        With `below`, only targets at or below that name: the in-domain
        glue a referral must carry (RFC 9471 section 2.1); BIND with
        minimal responses sends no sibling glue either.
        """
        out: list[RRset] = []
        for target in ns.rdatas:
            key = names.key_of(target)
            if below is not None and not names.is_subdomain(key, below):
                continue
            node = self.nodes.get(key, {})
            out.extend(node[t] for t in (rdata.A, rdata.AAAA) if t in node)

        return tuple(out)


def _answer_any(node: dict[int, RRset]) -> list[RRset]:
    """RFC 8482 section 4.1: answer ANY with one RRset, not all of them."""
    if rdata.CNAME in node:
        return [node[rdata.CNAME]]

    return [node[min(node)]]


@dataclass(frozen=True)
class _Step:
    """One name looked up inside one zone."""

    kind: str  # answer, cname, dname, nodata, nxdomain, referral, yxdomain
    rrsets: tuple[RRset, ...] = ()
    glue: tuple[RRset, ...] = ()


def _lookup(zone: Zone, qname: bytes, qtype: int) -> _Step:
    """RFC 1034 section 4.3.2 step 3 for one name in one zone."""
    key = names.key_of(qname)
    cut = zone.find_cut(key, qtype)
    if cut is not None:
        ns = zone.nodes[cut][rdata.NS]
        return _Step("referral", (ns,), zone.addresses_for(ns, cut))
    owner = zone.find_dname(key)
    if owner is not None:
        return _dname_step(zone.nodes[owner][DNAME], qname, len(owner), qtype)

    node = zone.nodes.get(key)
    owner = qname
    if node is None:
        # RFC 4592 section 3.3.1: the source of synthesis is the wildcard
        # child of the closest encloser; RFC 1034 4.3.3.
        source = _WILDCARD + zone.closest_encloser(key)
        node = zone.nodes.get(source)
        if node is None:
            return _Step("nxdomain")

    return _node_step(node, owner, qtype)


def _dname_step(dname: RRset, qname: bytes, owner_length: int, qtype: int) -> _Step:
    """RFC 6672 section 3.1: the DNAME and a CNAME synthesised from it,
    or YXDOMAIN when the new name would be over 255 octets.  For a CNAME
    question the synthesised CNAME is the answer and is not followed."""
    target = qname[: len(qname) - owner_length] + dname.rdatas[0]
    if len(target) > names.MAX_NAME:
        return _Step("yxdomain", (dname,))
    cname = RRset(qname, rdata.CNAME, dname.ttl, (target,))

    return _Step("answer" if qtype == rdata.CNAME else "dname", (dname, cname))


def _node_step(node: dict[int, RRset], owner: bytes, qtype: int) -> _Step:
    if qtype == rdata.ANY and node:
        found = _answer_any(node)
    elif qtype in node:
        found = [node[qtype]]
    elif rdata.CNAME in node:
        return _Step("cname", (replace(node[rdata.CNAME], name=owner),))
    else:
        return _Step("nodata")

    return _Step("answer", tuple(replace(r, name=owner) for r in found))


@dataclass
class ZoneSet:
    """All zones we serve; immutable once built, swapped whole on reload."""

    zones: dict[bytes, Zone] = field(default_factory=dict)

    def find_zone(self, key: bytes) -> Zone | None:
        """The zone with the longest origin at or above a folded name."""
        while True:
            zone = self.zones.get(key)
            if zone is not None:
                return zone
            if key == names.ROOT:
                return None
            key = key[1 + key[0] :]

    def add_existing_names(self, wire_names: Iterable[bytes]) -> None:
        """Make names answered elsewhere (CDN names) exist in their zone,
        so their ancestors are empty non-terminals, not NXDOMAIN (RFC 8020
        section 2), and no wildcard claims them.  Call before serving."""
        for wire_name in wire_names:
            key = names.key_of(wire_name)
            zone = self.find_zone(key)
            if zone is not None:
                zone.nodes.setdefault(key, {})
                _add_ancestors(zone.nodes, zone.key)

    def resolve(self, qname: bytes, qtype: int) -> Resolution:
        """Answer one IN-class question authoritatively.

        Follows CNAMEs (and DNAMEs) through our zones, each name at most
        once; a name in no zone yields REFUSED.  Never raises for any
        wire name.
        """
        zone = self.find_zone(names.key_of(qname))
        if zone is None:
            return REFUSAL

        answer: list[RRset] = []
        step, zone = self._chase(zone, qname, qtype, answer)

        return _finish(step, zone, qtype, answer)

    def _chase(
        self, zone: Zone, qname: bytes, qtype: int, answer: list[RRset]
    ) -> tuple[_Step | None, Zone]:
        """Look names up along the alias chain, adding aliases to `answer`.

        Returns the last step and its zone, or None when the chain leaves
        our zones, comes back to a name already seen or grows too long.
        """
        seen = set()
        while True:
            step = _lookup(zone, qname, qtype)
            if step.kind not in ("cname", "dname"):
                return step, zone
            answer.extend(step.rrsets)
            seen.add(names.key_of(qname))
            qname = step.rrsets[-1].rdatas[0]
            key = names.key_of(qname)
            next_zone = self.find_zone(key)
            if next_zone is None or key in seen or len(seen) >= MAX_CNAME_CHAIN:
                return None, zone
            zone = next_zone


def _finish(
    step: _Step | None, zone: Zone, qtype: int, answer: list[RRset]
) -> Resolution:
    """Turn the last lookup step into RCODE, AA and sections."""
    if step is None:
        return Resolution(NOERROR, True, tuple(answer))
    if step.kind == "referral":
        # Authoritative only for the aliases that led here, if any.
        return Resolution(NOERROR, bool(answer), tuple(answer), step.rrsets, step.glue)
    answer.extend(step.rrsets)
    if step.kind == "yxdomain":
        return Resolution(YXDOMAIN, True, tuple(answer))
    if step.kind == "answer":
        additional: tuple[RRset, ...] = ()
        if qtype == rdata.NS:
            # Addresses of the zone's own name servers, as BIND adds even
            # with minimal responses.
            additional = zone.addresses_for(step.rrsets[0])
        return Resolution(NOERROR, True, tuple(answer), (), additional)

    rcode = NXDOMAIN if step.kind == "nxdomain" else NOERROR
    soa = zone.negative_soa()
    if qtype == rdata.SOA and rcode == NXDOMAIN:
        # BIND sends TTL 0 here so the negative SOA is not cached in place
        # of the real one.
        soa = replace(soa, ttl=0)

    return Resolution(rcode, True, tuple(answer), (soa,))


def build_zone(parsed: zonefile.ParsedZone, source: str) -> Zone:
    """Group records into RRsets and validate the zone as BIND does.

    Raises ZoneError with one `file:line: reason` line per problem: CNAME
    beside other data (RFC 1034 section 3.6.2, RFC 2181 section 10.1),
    several SOA or CNAME records at a name, no SOA or NS at the apex, an
    in-zone NS target without address records.
    """
    nodes: dict[bytes, dict[int, RRset]] = {}
    lines: dict[tuple[bytes, int], str] = {}
    problems: list[str] = []
    warnings = list(parsed.warnings)
    for record in parsed.records:
        _add_record(nodes, lines, record, problems, warnings)

    apex = names.key_of(parsed.origin)
    _add_ancestors(nodes, apex)
    cuts = frozenset(
        key for key, node in nodes.items() if key != apex and rdata.NS in node
    )
    zone = Zone(parsed.origin, nodes, cuts, source, tuple(warnings))
    problems.extend(_check(zone, lines, source))
    if problems:
        raise ZoneError("\n".join(problems))

    return zone


def _add_record(
    nodes: dict[bytes, dict[int, RRset]],
    lines: dict[tuple[bytes, int], str],
    record: Record,
    problems: list[str],
    warnings: list[str],
) -> None:
    key = names.key_of(record.name)
    node = nodes.setdefault(key, {})
    old = node.get(record.rtype)
    if old is None:
        node[record.rtype] = RRset(
            record.name, record.rtype, record.ttl, (record.rdata,)
        )
        lines[(key, record.rtype)] = record.where
        return
    if record.rdata in old.rdatas:
        return  # duplicates collapse, as in BIND
    if record.rtype in _SINGLETONS:
        problems.append(
            "%s: multiple RRs of singleton type %s"
            % (record.where, rdata.type_text(record.rtype))
        )
        return
    if record.ttl != old.ttl:
        # RFC 2181 section 5.2: one TTL per RRset; BIND keeps the first.
        message = "%s: TTL set to prior TTL (%d)" % (record.where, old.ttl)
        warnings.append(message)
        log.warning("zone ttl_mismatch %s", message)
    node[record.rtype] = replace(old, rdatas=old.rdatas + (record.rdata,))


def _add_ancestors(nodes: dict[bytes, dict[int, RRset]], apex: bytes) -> None:
    """Create the empty non-terminals between every owner and the apex."""
    for key in list(nodes):
        while len(key) > len(apex):
            key = key[1 + key[0] :]
            nodes.setdefault(key, {})


def _check(zone: Zone, lines: dict[tuple[bytes, int], str], source: str) -> list[str]:
    problems = []
    apex = zone.nodes.get(zone.key, {})
    if rdata.SOA not in apex:
        problems.append("%s:1: zone %s has no SOA record" % (source, _text(zone)))
    if rdata.NS not in apex:
        problems.append("%s:1: zone %s has no NS records" % (source, _text(zone)))

    for key, node in zone.nodes.items():
        if rdata.CNAME in node and len(node) > 1:
            problems.append("%s: CNAME and other data" % lines[(key, rdata.CNAME)])
    if rdata.NS in apex:
        problems.extend(_check_ns(zone, apex[rdata.NS], lines[(zone.key, rdata.NS)]))

    return problems


def _check_ns(zone: Zone, ns: RRset, where: str) -> list[str]:
    """BIND's integrity check of the apex NS RRset: a target inside the
    zone must have address records and must not be a CNAME (RFC 2181
    section 10.3).  Delegations without glue only get warnings there, so
    they are not checked here."""
    problems = []
    for target in ns.rdatas:
        key = names.key_of(target)
        if not names.is_subdomain(key, zone.key) or zone.find_cut(key, 0):
            continue
        node = zone.nodes.get(key, {})
        text = names.to_text(target).rstrip(".")
        if rdata.CNAME in node:
            problems.append("%s: NS '%s' is a CNAME (illegal)" % (where, text))
        elif rdata.A not in node and rdata.AAAA not in node:
            problems.append(
                "%s: NS '%s' has no address records (A or AAAA)" % (where, text)
            )

    return problems


def _text(zone: Zone) -> str:
    return names.to_text(zone.origin).rstrip(".") or "."


def load_zone(
    origin: str, path: str | Path, root_dir: str | Path | None = None
) -> Zone:
    """Parse and validate one zone file; raises ZoneError."""
    wire = names.from_text(origin if origin.endswith(".") else origin + ".", None)
    parsed = zonefile.parse_file(path, wire, root_dir)

    return build_zone(parsed, str(path))


def load_zone_dir(directory: str | Path) -> ZoneSet:
    """Load every `<origin>.zone` file of a directory into a ZoneSet.

    Raises ZoneError for the first bad zone, so a reload can keep the
    zones already serving.
    """
    directory = Path(directory)
    zones: dict[bytes, Zone] = {}
    for path in sorted(directory.glob("*.zone")):
        zone = load_zone(path.name[: -len(".zone")], path, directory)
        zones[zone.key] = zone
        count = _count(zone.nodes.values())
        log.info("zone loaded origin=%s records=%d", _text(zone), count)

    return ZoneSet(zones)


def _count(nodes: Iterable[dict[int, RRset]]) -> int:
    return sum(len(rrset.rdatas) for node in nodes for rrset in node.values())
