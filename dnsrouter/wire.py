"""DNS message codec for an authoritative server: queries in, replies out.

Queries are parsed by hand: a standard query is a header, one question
whose name is never compressed (a pointer there could only point into the
header or loop) and at most an OPT record, so a straight scan costs a few
microseconds where a general decoder costs a hundred.  Anything that
breaks the format raises MalformedPacketError; RFC 1035 section 4.1.4 and
RFC 9267 section 2 rules for names are in `names.read_wire`.

Replies are built from a body (every section after the question) encoded
once per question with owner names compressed against the question name
at offset 12.  A body depends only on the question name's length, not its
case, so the same bytes serve every spelling of a name (RFC 4343 section
4.1: the question comes back exactly as sent, and names in record data as
the zone spells them).  Bodies remember where each
RRset ends, so truncation always cuts between whole RRsets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dnsrouter import names, rdata
from dnsrouter.errors import MalformedPacketError
from dnsrouter.zone import RRset

HEADER = struct.Struct("!6H")
RR_FIXED = struct.Struct("!HHIH")
QUESTION_TAIL = struct.Struct("!HH")

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010
# Bits a reply copies from the query: opcode, RD (RFC 1035 4.1.1) and CD
# (RFC 4035 section 3.1.6); TC, Z, AD and RA are never echoed.
COPIED_FLAGS = 0x7800 | RD | CD

OPT_NSID = 3  # RFC 5001
BADVERS = 16  # RFC 6891 section 9
MIN_UDP = 512  # RFC 6891 section 6.2.5: smaller advertised sizes mean 512
TCP_MAX = 65535  # RFC 1035 section 4.2.2 length prefix


class Edns:
    """The OPT record of a query (RFC 6891 section 6.1.2)."""

    __slots__ = ("payload", "ext_rcode", "version", "do", "options")

    def __init__(
        self, payload: int, ttl: int, options: list[tuple[int, bytes]]
    ) -> None:
        self.payload = payload
        self.ext_rcode = ttl >> 24
        self.version = (ttl >> 16) & 0xFF
        self.do = bool(ttl & 0x8000)
        self.options = options

    def find_option(self, code: int) -> bytes | None:
        for option, data in self.options:
            if option == code:
                return data
        return None


class Query:
    """A parsed query; `question` holds its question bytes as sent."""

    __slots__ = ("id", "flags", "qname", "qtype", "qclass", "question", "edns")

    def __init__(
        self,
        qid: int,
        flags: int,
        qname: bytes,
        qtype: int,
        qclass: int,
        question: bytes,
        edns: Edns | None,
    ) -> None:
        self.id = qid
        self.flags = flags
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.question = question
        self.edns = edns

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def is_droppable(data: bytes) -> bool:
    """Messages never answered: shorter than a header, or responses (QR)."""
    return len(data) < 12 or bool(data[2] & 0x80)


def parse_query(data: bytes) -> Query:
    """Parse a query message that `is_droppable` accepted.

    Raises MalformedPacketError when QDCOUNT is not 1 (RFC 9619), the
    question is truncated, a label is over 63 octets, the question name
    uses compression, a record runs past the end, OPT appears twice or
    outside the additional section (RFC 6891 section 6.1.1).  Octets
    after the last counted record are ignored, as BIND ignores them.
    """
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if qdcount != 1:
        raise MalformedPacketError("QDCOUNT %d, expected 1" % qdcount)

    pos = 12
    try:
        length = data[pos]
        while length:
            if length > names.MAX_LABEL:
                raise MalformedPacketError("bad label length %d in question" % length)
            pos += length + 1
            length = data[pos]
        pos += 1
        if pos - 12 > names.MAX_NAME:
            raise MalformedPacketError("question name over 255 octets")
        qtype, qclass = QUESTION_TAIL.unpack_from(data, pos)
    except (IndexError, struct.error):
        raise MalformedPacketError("truncated question") from None
    qname = data[12:pos]
    pos += 4

    edns = None
    if arcount == 1 and not ancount and not nscount:
        edns = _parse_lone_opt(data, pos)
    elif ancount or nscount or arcount:
        edns = _parse_records(data, pos, ancount + nscount, arcount)

    return Query(qid, flags, qname, qtype, qclass, data[12:pos], edns)


def _parse_lone_opt(data: bytes, pos: int) -> Edns | None:
    """The common case of one additional record: an OPT with root owner.
    Anything else takes the general walk."""
    if pos + 11 <= len(data) and data[pos] == 0:
        rtype, payload, ttl, rdlength = RR_FIXED.unpack_from(data, pos + 1)
        end = pos + 11 + rdlength
        if rtype == rdata.OPT and end <= len(data):
            return Edns(payload, ttl, _parse_options(data[pos + 11 : end]))

    return _parse_records(data, pos, 0, 1)


def _parse_records(data: bytes, pos: int, before: int, arcount: int) -> Edns | None:
    """Walk the answer, authority and additional records; find the OPT."""
    edns = None
    try:
        for index in range(before + arcount):
            owner, pos = names.read_wire(data, pos)
            rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(data, pos)
            pos += RR_FIXED.size
            if pos + rdlength > len(data):
                raise MalformedPacketError("record data runs past the end")
            if rtype == rdata.OPT:
                if index < before or edns is not None or owner != names.ROOT:
                    raise MalformedPacketError("misplaced or second OPT record")
                edns = Edns(rclass, ttl, _parse_options(data[pos : pos + rdlength]))
            pos += rdlength
    except (ValueError, struct.error) as exc:
        raise MalformedPacketError("bad record: %s" % exc) from None

    return edns


def _parse_options(data: bytes) -> list[tuple[int, bytes]]:
    """EDNS options as (code, data); RFC 6891 section 6.1.2."""
    options = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise MalformedPacketError("truncated EDNS option header")
        code, length = struct.unpack_from("!HH", data, pos)
        if pos + 4 + length > len(data):
            raise MalformedPacketError("EDNS option %d runs past OPT" % code)
        options.append((code, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length

    return options


def udp_limit(edns: Edns | None, max_udp_payload: int) -> int:
    """The largest UDP reply allowed (RFC 6891 sections 6.2.3 and 6.2.5)."""
    if edns is None:
        return MIN_UDP

    return max(MIN_UDP, min(edns.payload, max_udp_payload))


def reply_flags(query_flags: int, aa: bool, rcode: int) -> int:
    return QR | (query_flags & COPIED_FLAGS) | (AA if aa else 0) | (rcode & 0xF)


def opt_record(
    payload: int, ext_rcode: int, do: bool, options: bytes = b""
) -> bytes:
    """An OPT RR with VERSION 0 (the one we speak, RFC 6891 section 6.1.3)."""
    ttl = (ext_rcode << 24) | (0x8000 if do else 0)

    return b"\x00" + RR_FIXED.pack(rdata.OPT, payload, ttl, len(options)) + options


def option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def header_only(data: bytes, rcode: int) -> bytes:
    """A reply with no sections: ID and the copyable flags of the query."""
    qid, flags = struct.unpack_from("!HH", data)

    return HEADER.pack(qid, reply_flags(flags, False, rcode), 0, 0, 0, 0)


@dataclass(frozen=True)
class Body:
    """Encoded sections after the question, cut points between RRsets.

    `marks[i]` = (end offset in `data`, ANCOUNT, NSCOUNT, ARCOUNT, whether
    losing the RRsets after this mark requires TC) for the first i RRsets.
    """

    data: bytes
    counts: tuple[int, int, int]
    marks: tuple[tuple[int, int, int, int, bool], ...]


EMPTY_BODY = Body(b"", (0, 0, 0), ((0, 0, 0, 0, False),))


class _Compressor:
    """Writes names with pointers to earlier suffixes (RFC 1035 4.1.4).

    Owner names match suffixes case-insensitively, the question's too, so
    an answer's owner reads as the question was asked. Names inside
    record data keep the zone's case (RFC 4343 section 4.1, as BIND
    does): they point only to earlier bytes of identical case, never into
    the question, whose case changes from query to query while the body
    is shared.
    """

    def __init__(self, qname: bytes, base: int) -> None:
        self.base = base
        self.out = bytearray()
        self.table: dict[bytes, int] = {}   # folded suffix -> offset
        self.exact: dict[bytes, int] = {}   # suffix as written -> offset
        self._remember(qname, 12, exact=False)

    def _remember(
        self, wire: bytes, offset: int, stop: int = -1, exact: bool = True
    ) -> None:
        """Record the suffixes of `wire` written at `offset` that start
        before `stop` (all when -1); `exact`: the bytes there, pointer
        targets included, are `wire`'s own case."""
        key = names.key_of(wire)
        pos = 0
        while key[pos] and offset + pos < 0x3FFF and pos != stop:
            self.table.setdefault(key[pos:], offset + pos)
            if exact:
                self.exact.setdefault(wire[pos:], offset + pos)
            pos += key[pos] + 1

    def name(self, wire: bytes, in_data: bool = False) -> None:
        key = names.key_of(wire)
        start = self.base + len(self.out)
        pos = 0
        while wire[pos]:
            offset = self.exact.get(wire[pos:])
            exact = offset is not None
            if offset is None and not in_data:
                offset = self.table.get(key[pos:])
            if offset is not None:
                self.out += wire[:pos] + struct.pack("!H", 0xC000 | offset)
                self._remember(wire, start, pos, exact)
                return
            pos += wire[pos] + 1
        self.out += wire
        self._remember(wire, start)

    def rrset(self, rrset: RRset) -> None:
        for data in rrset.rdatas:
            self.name(rrset.name)
            fixed = len(self.out)
            self.out += b"\x00" * RR_FIXED.size
            rdata_start = len(self.out)
            self.rdata(rrset.rtype, data)
            RR_FIXED.pack_into(
                self.out,
                fixed,
                rrset.rtype,
                rrset.rclass,
                rrset.ttl,
                len(self.out) - rdata_start,
            )

    def rdata(self, rtype: int, data: bytes) -> None:
        if rtype not in rdata.COMPRESSIBLE:
            self.out += data
            return
        pos = 0
        for offset, name in rdata.embedded_names(rtype, data):
            self.out += data[pos:offset]
            self.name(name, in_data=True)
            pos = offset + len(name)
        self.out += data[pos:]


def encode_body(
    qname: bytes,
    sections: tuple[tuple[RRset, ...], tuple[RRset, ...], tuple[RRset, ...]],
    glue_required: bool = False,
) -> Body:
    """Encode answer, authority and additional RRsets after a question.

    Answer and authority RRsets are required (dropping them sets TC, RFC
    2181 section 9); additional ones only when they are referral glue
    (RFC 9471 section 3).
    """
    base = 12 + len(qname) + 4
    writer = _Compressor(qname, base)
    counts = [0, 0, 0]
    marks = [(0, 0, 0, 0, False)]
    for index, section in enumerate(sections):
        for rrset in section:
            writer.rrset(rrset)
            counts[index] += len(rrset.rdatas)
            required = index < 2 or glue_required
            marks.append((len(writer.out), counts[0], counts[1], counts[2], required))

    return Body(bytes(writer.out), (counts[0], counts[1], counts[2]), tuple(marks))


def assemble(
    qid: int,
    flags: int,
    question: bytes,
    body: Body,
    opt: bytes,
    limit: int,
) -> bytes:
    """Header, question, body and OPT, cut to whole RRsets under `limit`.

    When something required does not fit, TC is set (RFC 1035 4.2.1); the
    OPT record always stays (RFC 6891 section 7).
    """
    room = limit - 12 - len(question) - len(opt)
    an, ns, ar = body.counts
    data = body.data
    if len(data) > room:
        index = len(body.marks) - 1
        while index and body.marks[index][0] > room:
            index -= 1
        end, an, ns, ar, _ = body.marks[index]
        if any(mark[4] for mark in body.marks[index + 1 :]):
            flags |= TC
        data = data[:end]
    head = HEADER.pack(qid, flags, 1, an, ns, ar + (1 if opt else 0))

    return head + question + data + opt
