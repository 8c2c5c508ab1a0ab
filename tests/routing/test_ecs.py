"""RFC 7871 option parsing and echo, including field case D01."""

from __future__ import annotations

import ipaddress

import pytest

from dnsrouter.ecs import (
    ECS_OPTION_CODE,
    client_subnet_from_text,
    encode_client_subnet,
    parse_client_subnet,
)
from dnsrouter.errors import MalformedEcsError, MalformedPacketError

# Field case D01: complete queries for cdn.example.com A with one ECS option.
D01 = {
    "a": "d01a000000010000000000010363646e076578616d706c6503636f6d00000100010000"
    "2904d00000000000080008000400000000",
    "b": "d01b000000010000000000010363646e076578616d706c6503636f6d00000100010000"
    "2904d00000000000080008000400010000",
    "c": "d01c000000010000000000010363646e076578616d706c6503636f6d00000100010000"
    "2904d000000000000c0008000800011900cb007180",
    "d": "d01d000000010000000000010363646e076578616d706c6503636f6d00000100010000"
    "2904d000000000000c0008000800011800cb007100",
    "e": "d01e000000010000000000010363646e076578616d706c6503636f6d00000100010000"
    "2904d000000000000c0008000800011900cb007181",
    "f": "d01f000000010000000000010363646e076578616d706c6503636f6d00000100010000"
    "2904d000000000000a0008000600011800cb00",
    "g": "d010000000010000000000010363646e076578616d706c6503636f6d00000100010000"
    "2904d000000000000d0008000900012100cb00718000",
}

# Header (12) + question cdn.example.com A (17 + 4) + OPT before RDATA (11).
OPT_RDATA_OFFSET = 44


def ecs_data(message_hex: str) -> bytes:
    """The DATA of the single ECS option in a D01 query."""
    rdata = bytes.fromhex(message_hex)[OPT_RDATA_OFFSET:]
    code = int.from_bytes(rdata[0:2], "big")
    length = int.from_bytes(rdata[2:4], "big")
    assert code == ECS_OPTION_CODE

    return rdata[4:4 + length]


def test_d01a_family_zero_source_zero_is_accepted_as_no_client_information():
    """Old dig/getdns send FAMILY 0 with SOURCE 0: accepted, no address."""
    subnet = parse_client_subnet(ecs_data(D01["a"]))

    assert (subnet.family, subnet.source_prefix) == (0, 0)
    assert not subnet.has_client_address
    assert encode_client_subnet(subnet, 24) == bytes.fromhex("00000000")


def test_d01b_source_zero_echoes_scope_zero_and_no_address():
    """`dig +subnet=0.0.0.0/0`: echo 0001 00 00, whatever scope is asked."""
    subnet = parse_client_subnet(ecs_data(D01["b"]))

    assert not subnet.has_client_address
    assert encode_client_subnet(subnet, 16) == bytes.fromhex("00010000")


def test_d01c_truncated_address_is_parsed_and_echoed_byte_for_byte():
    """203.0.113.128/25 carries 4 octets; the echo copies them exactly."""
    subnet = parse_client_subnet(ecs_data(D01["c"]))

    assert subnet.network == ipaddress.ip_network("203.0.113.128/25")
    assert subnet.address == bytes.fromhex("cb007180")
    assert encode_client_subnet(subnet, 24) == bytes.fromhex("00011918cb007180")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("d", "octets"),          # /24 with 4 address octets
        ("e", "beyond"),          # /25 with a host bit set
        ("f", "octets"),          # /24 with 2 address octets
        ("g", "exceeds"),         # FAMILY 1 with SOURCE 33
    ],
)
def test_d01_malformed_options_raise_formerr_errors(case: str, reason: str):
    """Cases d-g violate RFC 7871 section 6 and must become FORMERR."""
    with pytest.raises(MalformedEcsError, match=reason) as caught:
        parse_client_subnet(ecs_data(D01[case]))

    assert isinstance(caught.value, MalformedPacketError)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("0001", "at least 4"),             # shorter than the fixed fields
        ("000318000102", "FAMILY"),         # family 3
        ("00011810c63364", "SCOPE"),        # non-zero scope in a query
        ("000281" + "00" * 17, "exceeds"),  # IPv6 source 129
        ("00000000ff", "SOURCE PREFIX-LENGTH 0"),  # family 0 with an address
        ("00000800ff", "FAMILY 0"),         # family 0 with a source prefix
    ],
)
def test_other_malformed_options_are_refused(data: str, reason: str):
    """Short options, unknown families and scopes in queries are errors."""
    with pytest.raises(MalformedEcsError, match=reason):
        parse_client_subnet(bytes.fromhex(data))


def test_ipv6_source_56_parses_seven_octets_and_echoes_scope_48():
    """D02 step 6: 2001:db8:1234:5600::/56 with scope 48 in the reply."""
    data = bytes.fromhex("0002380020010db8123456")

    subnet = parse_client_subnet(data)

    assert subnet.network == ipaddress.ip_network("2001:db8:1234:5600::/56")
    assert encode_client_subnet(subnet, 48) == bytes.fromhex(
        "0002383020010db8123456"
    )


@pytest.mark.parametrize(
    "text", ["198.51.100.0/24", "203.0.113.128/25", "2001:db8::/32", "10.0.0.0/5"]
)
def test_text_form_round_trips_through_the_wire_form(text: str):
    """client_subnet_from_text builds what parse_client_subnet accepts."""
    built = client_subnet_from_text(text)

    parsed = parse_client_subnet(encode_client_subnet(built, 0))

    assert parsed == built


def test_ipv6_source_zero_is_no_client_information_too():
    """FAMILY 2 with SOURCE 0: parsed, no address, echoed with SCOPE 0."""
    subnet = parse_client_subnet(bytes.fromhex("00020000"))

    assert subnet.network == ipaddress.ip_network("::/0")
    assert not subnet.has_client_address
    assert encode_client_subnet(subnet, 48) == bytes.fromhex("00020000")
