"""Field cases D03-D07, D09 and D12 (faults other servers shipped), in process.

Each test feeds the exact bytes or query of the case to a Responder over
the fixture zone (zones/example.com.zone) and checks the reply bytes.
"""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
import pytest

from tests.dns.helpers import ZONES, ask, ask_bytes, make_responder, rrsets_text

SOA_TEXT = (
    "example.com. 300 IN SOA ns1.example.com. hostmaster.example.com. "
    "2024010101 7200 3600 1209600 300"
)


def parse(reply: bytes | None) -> dns.message.Message:
    assert reply is not None
    return dns.message.from_wire(reply)


# D03 -----------------------------------------------------------------

D03_BADVERS = {
    "edns1": (
        "d06a00000001000000000001076578616d706c6503636f6d0000060001000029"
        "04d0000100000000"
    ),
    "edns1_unknown_option": (
        "d06c00000001000000000001076578616d706c6503636f6d0000060001000029"
        "04d0000100000008fde90004deadbeef"
    ),
}


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("name", sorted(D03_BADVERS))
def test_d03_edns_version_1_gets_badvers_with_question(name: str, warm: bool) -> None:
    """D03 2/4: BADVERS in the OPT (ext RCODE 1, version 0), header RCODE
    0, question kept, no answer, whether or not the name was cached."""
    responder = make_responder()
    if warm:
        ask(responder, "example.com", "SOA")

    reply = ask_bytes(responder, bytes.fromhex(D03_BADVERS[name]))
    assert reply is not None

    assert reply[3] & 0x0F == 0
    assert struct.unpack("!4H", reply[4:12]) == (1, 0, 0, 1)
    assert reply[12:29] == bytes.fromhex(D03_BADVERS[name])[12:29]
    # OPT TTL: EXTENDED-RCODE 1, VERSION 0, flags 0.
    assert reply[-6:-2] == b"\x01\x00\x00\x00"
    assert parse(reply).rcode() == dns.rcode.BADVERS


def test_d03_unknown_option_is_ignored_and_not_echoed() -> None:
    """D03 3: option 65001 is ignored; normal AA answer; not echoed."""
    hexq = (
        "d06b00000001000000000001076578616d706c6503636f6d0000060001000029"
        "04d0000000000008fde90004deadbeef"
    )

    reply = parse(ask_bytes(make_responder(), bytes.fromhex(hexq)))

    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & 0x0400
    assert rrsets_text(reply.answer) == {SOA_TEXT}
    assert reply.opt is not None and list(reply.options) == []


def test_d03_two_opt_records_are_formerr() -> None:
    """D03 5: two OPT RRs in the additional section give FORMERR."""
    hexq = (
        "d06d00000001000000000002076578616d706c6503636f6d0000060001000029"
        "04d000000000000000002904d0000000000000"
    )

    reply = ask_bytes(make_responder(), bytes.fromhex(hexq))
    assert reply is not None

    assert reply[:2] == b"\xd0\x6d" and reply[2] & 0x80
    assert reply[3] & 0x0F == 1


# D04 -----------------------------------------------------------------

BIG_NOEDNS = "d05a0000000100000000000003626967076578616d706c6503636f6d0000010001"
BIG_1232 = (
    "d05b0000000100000000000103626967076578616d706c6503636f6d00000100"
    "0100002904d0000000000000"
)
BIG_512 = (
    "d05c0000000100000000000103626967076578616d706c6503636f6d00000100"
    "010000290200000000000000"
)


def test_d04_udp_without_edns_is_truncated_to_512_with_tc() -> None:
    """D04 1: <= 512 octets, TC, question present, no partial RRset."""
    reply = ask_bytes(make_responder(), bytes.fromhex(BIG_NOEDNS))
    assert reply is not None
    message = parse(reply)

    assert len(reply) <= 512 and message.flags & 0x0200
    assert len(message.question) == 1
    assert all(len(rrset) == 40 for rrset in message.answer)


def test_d04_udp_with_edns_1232_gets_all_40_in_684_octets() -> None:
    """D04 2: 684 octets, TC clear, 40 answers, OPT present."""
    reply = ask_bytes(make_responder(), bytes.fromhex(BIG_1232))
    assert reply is not None
    message = parse(reply)

    assert len(reply) == 684 and not message.flags & 0x0200
    assert len(message.answer[0]) == 40 and message.opt is not None


def test_d04_udp_with_edns_512_is_truncated_and_keeps_opt() -> None:
    """D04 3: a 512 buffer cannot hold 684 octets: TC, OPT kept."""
    reply = ask_bytes(make_responder(), bytes.fromhex(BIG_512))
    assert reply is not None
    message = parse(reply)

    assert len(reply) <= 512 and message.flags & 0x0200
    assert message.opt is not None


@pytest.mark.parametrize("hexq", [BIG_512, BIG_NOEDNS])
def test_d04_tcp_ignores_the_edns_buffer_size(hexq: str) -> None:
    """D04 4: over TCP all 40 answers come, TC clear, whatever the EDNS
    buffer said (RFC 6891 6.2.3: the size is a UDP limit)."""
    message = parse(ask_bytes(make_responder(), bytes.fromhex(hexq), "tcp"))

    assert not message.flags & 0x0200 and len(message.answer[0]) == 40


def test_d04_small_edns_payload_means_512() -> None:
    """D04: an advertised size under 512 is treated as 512."""
    hexq = BIG_512.replace("00290200", "00290100")

    reply = ask_bytes(make_responder(), bytes.fromhex(hexq))
    assert reply is not None

    assert len(reply) <= 512 and parse(reply).flags & 0x0200


# D05 -----------------------------------------------------------------


def test_d05_mixed_case_question_is_echoed_byte_for_byte() -> None:
    """D05: WwW.ExAmPlE.CoM gets 192.0.2.10, question bytes unchanged, and
    the answer owner points at the question (offset 12)."""
    hexq = "d0070000000100000000000003577757074578416d506c4503436f4d0000010001"

    reply = ask_bytes(make_responder(), bytes.fromhex(hexq))
    assert reply is not None

    assert reply[12:33] == bytes.fromhex(hexq)[12:33]
    assert reply[33:35] == b"\xc0\x0c"
    assert rrsets_text(parse(reply).answer) == {"WwW.ExAmPlE.CoM. 300 IN A 192.0.2.10"}


def test_d05_mixed_case_cdn_name_routes_like_lower_case() -> None:
    """D05: CdN.eXaMpLe.CoM with a 198.51.100.0/24 subnet gets the EU
    edges: routing keys on the folded name."""
    import dns.edns

    option = dns.edns.ECSOption("198.51.100.0", 24)
    reply = ask(make_responder(), "CdN.eXaMpLe.CoM", "A", use_edns=0, options=[option])

    assert {r.address for r in reply.answer[0]} == {
        "192.0.2.21",
        "192.0.2.22",
        "192.0.2.23",
    }
    assert str(reply.question[0].name) == "CdN.eXaMpLe.CoM."


def test_d05_mixed_case_missing_name_is_nxdomain_with_soa() -> None:
    """D05: NoPe.ExAmPlE.CoM is NXDOMAIN with the SOA like lower case."""
    reply = ask(make_responder(), "NoPe.ExAmPlE.CoM", "A")

    assert reply.rcode() == dns.rcode.NXDOMAIN
    # Owner and names may take the query's case through compression.
    assert {t.lower() for t in rrsets_text(reply.authority)} == {SOA_TEXT.lower()}


# D06 -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name,rdtype,rcode",
    [
        ("nope.example.com", "A", dns.rcode.NXDOMAIN),
        ("www.example.com", "AAAA", dns.rcode.NOERROR),
        ("example.com", "AAAA", dns.rcode.NOERROR),
    ],
)
def test_d06_negative_answers_carry_aa_and_only_the_soa(
    name: str, rdtype: str, rcode: int
) -> None:
    """D06: NXDOMAIN/NODATA with AA, empty answer, exactly the SOA with
    TTL min(TTL, MINIMUM) in authority, no NS RRset."""
    reply = ask(make_responder(), name, rdtype)

    assert reply.rcode() == rcode and reply.flags & 0x0400
    assert reply.answer == []
    assert rrsets_text(reply.authority) == {SOA_TEXT}


def test_d06_foreign_zone_is_refused_without_aa() -> None:
    """D06: www.example.org is REFUSED, AA clear."""
    reply = ask(make_responder(), "www.example.org", "A")

    assert reply.rcode() == dns.rcode.REFUSED and not reply.flags & 0x0400


def test_d06_negative_soa_ttl_is_the_minimum_of_ttl_and_minimum(tmp_path) -> None:
    """RFC 2308 section 3: SOA TTL 600 with MINIMUM 60 gives 60."""
    from dnsrouter.zone import load_zone_dir

    (tmp_path / "example.net.zone").write_text(
        "$TTL 600\n@ SOA ns h 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n"
    )
    responder = make_responder(zones=load_zone_dir(tmp_path))

    reply = ask(responder, "nope.example.net", "A")

    assert reply.authority[0].ttl == 60


# D07 -----------------------------------------------------------------

D07 = [
    ("a.example.com", "A", dns.rcode.NOERROR, set()),
    ("a.example.com", "TXT", dns.rcode.NOERROR, set()),
    ("nope.a.example.com", "A", dns.rcode.NXDOMAIN, set()),
    (
        "x.w.example.com",
        "A",
        dns.rcode.NOERROR,
        {"x.w.example.com. 300 IN A 192.0.2.12"},
    ),
    (
        "x.y.w.example.com",
        "A",
        dns.rcode.NOERROR,
        {"x.y.w.example.com. 300 IN A 192.0.2.12"},
    ),
    ("host.w.example.com", "A", dns.rcode.NOERROR, set()),
    (
        "host.w.example.com",
        "TXT",
        dns.rcode.NOERROR,
        {'host.w.example.com. 300 IN TXT "exists"'},
    ),
    ("w.example.com", "A", dns.rcode.NOERROR, set()),
    (
        "*.w.example.com",
        "A",
        dns.rcode.NOERROR,
        {"*.w.example.com. 300 IN A 192.0.2.12"},
    ),
]


@pytest.mark.parametrize("name,rdtype,rcode,answer", D07)
def test_d07_empty_non_terminals_and_wildcards(
    name: str, rdtype: str, rcode: int, answer: set[str]
) -> None:
    """D07: ENTs exist (NODATA), wildcards synthesise with owner = QNAME
    only where the name does not exist (RFC 4592)."""
    reply = ask(make_responder(), name, rdtype)

    assert reply.rcode() == rcode and reply.flags & 0x0400
    assert rrsets_text(reply.answer) == answer
    if not answer:
        assert rrsets_text(reply.authority) == {SOA_TEXT}


# D09 -----------------------------------------------------------------

D09_FORMERR = {
    "a_self_pointer": "d11a00000001000000000000c00c00010001",
    "b_label_then_loop": "d11b000000010000000000000161c00c00010001",
    "c_pointer_past_end": "d11c00000001000000000000c0ff00010001",
    "d_qdcount_0": "d11d00000000000000000000",
    "e_qdcount_2": (
        "d11e0000000200000000000003777777076578616d706c6503636f6d00000100"
        "010363646e076578616d706c6503636f6d0000010001"
    ),
    "f_no_qtype": "d11f0000000100000000000003777777076578616d706c6503636f6d00",
    "g_header_only": "d11000000001000000000000",
    "h_label_64": (
        "d111000000010000000000004061616161616161616161616161616161616161"
        "6161616161616161616161616161616161616161616161616161616161616161"
        "6161616161616161616161616161616161076578616d706c6503636f6d000001"
        "0001"
    ),
}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("case", sorted(D09_FORMERR))
def test_d09_malformed_queries_get_formerr_with_id_and_no_question(
    case: str, transport: str
) -> None:
    """D09 a-h: FORMERR, ID copied, QR set, nothing echoed; then a normal
    query is still answered."""
    responder = make_responder()
    data = bytes.fromhex(D09_FORMERR[case])

    reply = ask_bytes(responder, data, transport)
    assert reply is not None

    assert reply[:2] == data[:2]
    assert reply[2] & 0x80 and reply[3] & 0x0F == 1
    assert reply[4:12] == b"\x00" * 8
    assert ask(responder, "www.example.com").answer


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    "hexq",
    [
        "d112000000",
        "d1138000000100000000000003777777076578616d706c6503636f6d0000010001",
    ],
    ids=["i_short", "j_response"],
)
def test_d09_short_packets_and_responses_are_dropped(hexq: str, transport: str) -> None:
    """D09 i, j: shorter than a header or QR set: no reply at all."""
    assert ask_bytes(make_responder(), bytes.fromhex(hexq), transport) is None


# D12 over the wire ----------------------------------------------------


def test_d12_txt_records_reach_the_wire_unchanged(tmp_path) -> None:
    """D12: TXT RDATA parsed from the file is sent byte for byte."""
    from dnsrouter.zone import load_zone_dir

    zone = tmp_path / "example.com.zone"
    zone.write_text(
        (ZONES / "example.com.zone").read_text()
        + 't3 IN TXT "say \\"hi\\"; ok"\nt4 IN TXT v=DMARC1\\;\\ p=none\n'
    )
    responder = make_responder(zones=load_zone_dir(tmp_path))

    for name, hexdata in [
        ("t3", "0c73617920226869223b206f6b"),
        ("t4", "10763d444d415243313b20703d6e6f6e65"),
    ]:
        reply = ask_bytes(
            responder,
            dns.message.make_query(name + ".example.com", "TXT").to_wire(),
        )
        assert reply is not None and reply.endswith(bytes.fromhex(hexdata))
