"""Responder behaviour beyond the field cases: CDN dispatch, debug names,
header flags, opcodes, ECS echo, referrals, CNAME chains and ANY."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from dnsrouter.responder import Responder, ResponderSettings
from dnsrouter.zone import load_zone_dir
from tests.dns.helpers import (
    EU_V4,
    FakeRouter,
    ask,
    ask_bytes,
    make_responder,
    rrsets_text,
)


def test_cdn_a_comes_from_the_router_with_its_ttl_and_aa() -> None:
    """A CDN name's A RRset is the router's addresses and TTL, with AA."""
    router = FakeRouter()

    reply = ask(make_responder(router), "cdn.example.com", "A")

    assert rrsets_text(reply.answer) == {"cdn.example.com. 30 IN A 192.0.2.41"}
    assert reply.flags & dns.flags.AA
    assert router.calls[0][:2] == ("cdn.example.com.", 1)
    assert str(router.calls[0][2]) == "192.0.2.1"


def test_cdn_ecs_is_passed_to_the_router_and_echoed_with_its_scope() -> None:
    """RFC 7871 7.2.1: the ECS echo keeps family, source and address and
    carries the router's scope."""
    option = dns.edns.ECSOption("198.51.100.0", 24)

    reply = ask(make_responder(), "cdn.example.com", "A", use_edns=0, options=[option])

    assert {r.address for r in reply.answer[0]} == set(EU_V4)
    (echo,) = reply.options
    assert (echo.address, echo.srclen, echo.scopelen) == ("198.51.100.0", 24, 24)


def test_cdn_empty_route_and_other_types_are_nodata_with_zone_soa() -> None:
    """An empty routing answer and a non-address type are NODATA + SOA."""
    for router, rdtype in [(FakeRouter(empty=True), "A"), (FakeRouter(), "MX")]:
        reply = ask(make_responder(router), "cdn.example.com", rdtype)

        assert reply.rcode() == dns.rcode.NOERROR and reply.answer == []
        assert reply.authority[0].rdtype == dns.rdatatype.SOA


def test_static_answer_echoes_ecs_with_scope_zero() -> None:
    """A static answer does not depend on the client: ECS scope 0."""
    option = dns.edns.ECSOption("198.51.100.0", 24)

    reply = ask(make_responder(), "www.example.com", "A", use_edns=0, options=[option])

    assert reply.options[0].scopelen == 0


def test_no_opt_in_reply_to_a_query_without_edns() -> None:
    """RFC 6891 section 7: no OPT unless the query had one."""
    assert ask(make_responder(), "www.example.com").opt is None


def test_malformed_ecs_is_formerr_with_question_and_opt() -> None:
    """D01 d: /24 with 4 address octets is FORMERR, question and OPT kept."""
    hexq = (
        "d01d000000010000000000010363646e076578616d706c6503636f6d00000100"
        "0100002904d000000000000c0008000800011800cb007100"
    )

    reply = dns.message.from_wire(ask_bytes(make_responder(), bytes.fromhex(hexq)))

    assert reply.rcode() == dns.rcode.FORMERR
    assert len(reply.question) == 1 and reply.opt is not None


def test_nsid_and_chaos_debug_names() -> None:
    """NSID returns server_id; id.server and version.server in CH."""
    responder = make_responder()
    nsid = dns.edns.GenericOption(dns.edns.NSID, b"")

    reply = ask(responder, "www.example.com", use_edns=0, options=[nsid])
    ident = ask(responder, "id.server", "TXT", rdclass="CH")
    version = ask(responder, "version.server", "TXT", rdclass="CH")
    other = ask(responder, "foo.server", "TXT", rdclass="CH")

    assert reply.options[0].to_wire() == b"router-1"
    assert rrsets_text(ident.answer) == {'id.server. 0 CH TXT "router-1"'}
    assert rrsets_text(version.answer) == {'version.server. 0 CH TXT "pycdn-dnsrouter"'}
    assert other.rcode() == dns.rcode.REFUSED


def test_whoami_name_answers_router_text_with_ttl_zero() -> None:
    """The whoami debug name shows what the router says about the client."""
    reply = ask(make_responder(), "whoami.example.com", "TXT")

    assert rrsets_text(reply.answer) == {
        'whoami.example.com. 0 IN TXT "resolver 192.0.2.1"'
    }


def test_reply_flags_copy_rd_and_cd_and_drop_tc_z_ad() -> None:
    """A reply copies RD, CD and opcode; never TC (from the query), Z, AD
    or RA; AA only for authoritative data."""
    query = dns.message.make_query("www.example.com", "A", use_edns=False)
    wire = bytearray(query.to_wire())
    wire[2] |= 0x03  # TC and RD
    wire[3] |= 0x70  # Z, AD, CD

    reply = ask_bytes(make_responder(), bytes(wire))
    assert reply is not None

    assert reply[2] == 0x85  # QR, AA, RD
    assert reply[3] == 0x10  # CD, RCODE 0


@pytest.mark.parametrize("opcode", [1, 2, 5, 15])
def test_unknown_opcodes_get_notimp_without_forbidden_flags(opcode: int) -> None:
    """Unknown opcodes: NOTIMP, opcode echoed, no AA/TC/RA/Z/AD."""
    query = dns.message.make_query("www.example.com", "A", use_edns=False)
    wire = bytearray(query.to_wire())
    wire[2] = (opcode << 3) | 0x07  # AA, TC, RD set by the client
    wire[3] = 0xF0

    reply = ask_bytes(make_responder(), bytes(wire))
    assert reply is not None

    assert (reply[2] >> 3) & 0x0F == opcode and reply[3] & 0x0F == 4
    assert reply[2] & 0x06 == 0 and reply[3] & 0xE0 == 0


def test_unknown_qtype_is_nodata_and_do_bit_is_echoed_without_signatures() -> None:
    """Unknown types are NODATA, never an error; DO answers normally."""
    reply = ask(
        make_responder(), "www.example.com", "TYPE65000", use_edns=0, want_dnssec=True
    )

    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == []
    assert reply.ednsflags & dns.flags.DO


def test_any_is_answered_with_one_rrset() -> None:
    """RFC 8482 section 4.1: ANY gets a single RRset."""
    reply = ask(make_responder(), "example.com", "ANY")

    assert len(reply.answer) == 1


@pytest.mark.parametrize(
    ("router", "expected"),
    [
        (FakeRouter(), {"cdn.example.com. 30 IN A 192.0.2.41"}),
        (FakeRouter(ipv6_only=True), {"cdn.example.com. 30 IN AAAA 2001:db8:50::41"}),
    ],
)
def test_any_for_a_cdn_name_gets_its_a_or_else_its_aaaa_rrset(
    router: FakeRouter, expected: set[str]
) -> None:
    """RFC 8482 section 4.1: ANY for a CDN name is answered with one of
    the RRsets it has (A, or AAAA when it has no IPv4 edge), with AA."""
    reply = ask(make_responder(router), "cdn.example.com", "ANY")

    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert rrsets_text(reply.answer) == expected


def test_any_for_a_cdn_name_without_edges_is_nodata_with_soa() -> None:
    """With no address at all, ANY is NODATA with the zone's SOA."""
    reply = ask(make_responder(FakeRouter(empty=True)), "cdn.example.com", "ANY")

    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.SOA


@pytest.mark.parametrize(
    ("qtype", "rcode"),
    [
        (41, dns.rcode.FORMERR),  # OPT
        (128, dns.rcode.FORMERR),  # first of the meta range
        (249, dns.rcode.FORMERR),  # TKEY
        (250, dns.rcode.FORMERR),  # TSIG
        (253, dns.rcode.NOTIMP),  # MAILB
        (254, dns.rcode.NOTIMP),  # MAILA
    ],
)
def test_meta_qtypes_get_formerr_and_mail_qtypes_notimp(qtype: int, rcode: int) -> None:
    """RFC 6895 3.1: OPT, TKEY, TSIG and the 128-250 meta range are never
    questions (FORMERR); the obsolete MAILA/MAILB are NOTIMP, as BIND."""
    header = bytes.fromhex("abcd00000001000000000000")
    question = b"\x03www\x07example\x03com\x00" + bytes([0, qtype, 0, 1])

    data = ask_bytes(make_responder(FakeRouter()), header + question)

    assert data is not None
    reply = dns.message.from_wire(data)
    assert reply.id == 0xABCD and reply.rcode() == rcode
    assert reply.answer == [] and not reply.flags & dns.flags.AA


def write_zone(tmp_path: Path, body: str) -> Path:
    head = "$TTL 300\n@ SOA ns1 h 1 2 3 4 300\n@ NS ns1\nns1 A 192.0.2.53\n"
    (tmp_path / "example.net.zone").write_text(head + body)
    return tmp_path


def test_delegation_gives_referral_with_glue_and_no_aa(tmp_path: Path) -> None:
    """RFC 1034 4.3.2 3b: below a cut, NS in authority, glue, AA clear."""
    zones = load_zone_dir(write_zone(tmp_path, "sub NS ns.sub\nns.sub A 192.0.2.77\n"))

    reply = ask(make_responder(zones=zones), "www.sub.example.net", "A")

    assert reply.rcode() == dns.rcode.NOERROR and not reply.flags & dns.flags.AA
    assert rrsets_text(reply.authority) == {
        "sub.example.net. 300 IN NS ns.sub.example.net."
    }
    assert rrsets_text(reply.additional) == {"ns.sub.example.net. 300 IN A 192.0.2.77"}


def test_cname_loop_ends_with_each_cname_once(tmp_path: Path) -> None:
    """A CNAME loop stops: each CNAME appears once, NOERROR."""
    zones = load_zone_dir(write_zone(tmp_path, "l1 CNAME l2\nl2 CNAME l1\n"))

    reply = ask(make_responder(zones=zones), "l1.example.net", "A")

    assert reply.rcode() == dns.rcode.NOERROR
    assert len(reply.answer) == 2


def test_dangling_cname_is_nxdomain_with_the_cname() -> None:
    """RFC 6604: the RCODE belongs to the last name in the chain."""
    reply = ask(make_responder(), "dangling.example.com", "A")

    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.answer[0].rdtype == dns.rdatatype.CNAME


def test_cname_to_a_foreign_name_stops_at_the_cname(tmp_path: Path) -> None:
    """A chain leaving our zones ends with the CNAME, NOERROR, AA."""
    zones = load_zone_dir(write_zone(tmp_path, "out CNAME www.example.org.\n"))

    reply = ask(make_responder(zones=zones), "out.example.net", "A")

    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert rrsets_text(reply.answer) == {
        "out.example.net. 300 IN CNAME www.example.org."
    }


def test_axfr_is_refused() -> None:
    """Zone transfers are not offered."""
    assert ask(make_responder(), "example.com", "AXFR").rcode() == dns.rcode.REFUSED


def test_unexpected_error_is_servfail_not_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in routing is logged with its traceback and answered SERVFAIL."""

    class Broken(FakeRouter):
        def route(self, *args: object) -> object:
            raise RuntimeError("boom")

    reply = ask(make_responder(Broken()), "cdn.example.com", "A")

    assert reply.rcode() == dns.rcode.SERVFAIL
    assert "boom" in caplog.text


def test_dname_synthesises_a_cname_and_follows_it(tmp_path: Path) -> None:
    """RFC 6672 3.1: a name below a DNAME gets the DNAME, a synthesised
    CNAME with the DNAME's TTL, and the target's data."""
    zones = load_zone_dir(
        write_zone(tmp_path, "old 60 DNAME new\nx.new A 192.0.2.55\n")
    )

    reply = ask(make_responder(zones=zones), "x.old.example.net", "A")

    assert rrsets_text(reply.answer) == {
        "old.example.net. 60 IN DNAME new.example.net.",
        "x.old.example.net. 60 IN CNAME x.new.example.net.",
        "x.new.example.net. 300 IN A 192.0.2.55",
    }


def test_dname_result_over_255_octets_is_yxdomain(tmp_path: Path) -> None:
    """RFC 6672 2.2: a substitution that overflows the name is YXDOMAIN."""
    long_target = ".".join(["a" * 63] * 3) + ".example.net."
    zones = load_zone_dir(write_zone(tmp_path, "old DNAME %s\n" % long_target))
    qname = "%s.%s.old.example.net" % ("b" * 63, "c" * 63)

    reply = ask(make_responder(zones=zones), qname, "A")

    assert reply.rcode() == dns.rcode.YXDOMAIN


def test_parent_of_a_cdn_name_is_an_empty_non_terminal(tmp_path: Path) -> None:
    """RFC 8020: a name above a CDN name exists, so it is NODATA, and a
    wildcard does not answer for it."""

    class DeepRouter(FakeRouter):
        def is_cdn_name(self, qname: str) -> bool:
            return qname == "a.cdn.example.net."

    zones = load_zone_dir(write_zone(tmp_path, "* A 192.0.2.99\n"))
    settings = ResponderSettings(cdn_names=("a.cdn.example.net.",))
    responder = Responder(zones, DeepRouter(), settings)

    parent = ask(responder, "cdn.example.net", "A")
    routed = ask(responder, "a.cdn.example.net", "A")

    assert parent.rcode() == dns.rcode.NOERROR and parent.answer == []
    assert rrsets_text(routed.answer) == {"a.cdn.example.net. 30 IN A 192.0.2.41"}


def test_unknown_edns_flags_are_not_echoed_and_payload_is_ours() -> None:
    """RFC 6891 6.1.4: undefined EDNS flag bits are ignored and left clear
    in the reply; DO is copied (RFC 3225); the OPT advertises our 1232."""
    reply = ask(
        make_responder(),
        "www.example.com",
        use_edns=0,
        ednsflags=0x4000 | dns.flags.DO,
        payload=4096,
    )

    assert reply.ednsflags == dns.flags.DO
    assert reply.payload == 1232


def test_query_with_answer_section_data_is_still_answered() -> None:
    """Records in the answer/authority sections of a query are skipped
    (only an OPT there would be an error), as BIND does."""
    query = dns.message.make_query("www.example.com", "A", use_edns=False)
    query.answer.append(
        dns.rrset.from_text("x.example.com.", 60, "IN", "A", "192.0.2.1")
    )

    reply = dns.message.from_wire(ask_bytes(make_responder(), query.to_wire()))

    assert reply.rcode() == dns.rcode.NOERROR and reply.answer


def test_octets_after_the_last_record_are_ignored_as_bind_does() -> None:
    """Trailing garbage after a complete query does not make it FORMERR."""
    for edns in (False, 0):
        query = dns.message.make_query("www.example.com", "A", use_edns=edns)

        reply = ask_bytes(make_responder(), query.to_wire() + b"\x00\x00junk")

        assert dns.message.from_wire(reply).answer


@pytest.mark.parametrize(
    ("qname", "rdtype"),
    [("EXAMPLE.com.", "SOA"), ("ExAmPlE.CoM.", "NS"), ("NOPE.Example.COM.", "A")],
)
def test_names_in_record_data_keep_the_zone_case_whatever_the_question(
    qname: str, rdtype: str
) -> None:
    """RFC 4343 section 4.1: SOA and NS data read as the zone spells them
    (lower case here), never in the question's case through a pointer;
    the question comes back as asked, twice in a row (shared body)."""
    responder = make_responder()

    for _ in range(2):
        reply = ask(responder, qname, rdtype)
        data = [
            line.split(None, 4)[4]
            for rrset in reply.answer + reply.authority
            for line in rrset.to_text().splitlines()
        ]

        assert reply.question[0].name.to_text() == qname
        assert data and all(
            "ns1.example.com." in text and text == text.lower() for text in data
        )
