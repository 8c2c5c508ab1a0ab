"""The RFC 1035 master-file parser: syntax, escapes, directives, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrouter import names, rdata, zonefile
from dnsrouter.errors import ZoneError

ORIGIN = names.from_text("example.com.", None)
HEAD = """$ORIGIN example.com.
$TTL 300
@ IN SOA ns1 hostmaster ( 1 7200 3600 1209600 300 )
@ IN NS ns1
ns1 IN A 192.0.2.53
"""


def parse(tmp_path: Path, body: str, head: str = HEAD) -> list[zonefile.Record]:
    path = tmp_path / "example.com.zone"
    path.write_bytes((head + body).encode("latin-1"))

    return list(zonefile.parse_file(path, ORIGIN).records)


def one(tmp_path: Path, body: str) -> zonefile.Record:
    return parse(tmp_path, body)[-1]


# D12: each TXT line and the RDATA it must produce on the wire.
D12_CASES = [
    ("t1 IN TXT a b c", "016101620163"),
    ('t2 IN TXT "a b c"', "056120622063"),
    ('t3 IN TXT "say \\"hi\\"; ok"', "0c73617920226869223b206f6b"),
    ("t4 IN TXT v=DMARC1\\;\\ p=none", "10763d444d415243313b20703d6e6f6e65"),
    ('t5 IN TXT "first" "second"', "056669727374067365636f6e64"),
    ('t6 IN TXT ( "part1"\n    "part2" )', "057061727431057061727432"),
    ('t7 IN TXT "caf\\195\\169"', "05636166c3a9"),
    (
        't8 IN TXT "%s" "%s"' % ("a" * 255, "b" * 45),
        "ff" + "61" * 255 + "2d" + "62" * 45,
    ),
]


@pytest.mark.parametrize("line,expected", D12_CASES, ids=[c[0][:2] for c in D12_CASES])
def test_d12_txt_rdata_matches_rfc1035_quoting_and_escapes(
    tmp_path: Path, line: str, expected: str
) -> None:
    """D12: quoting, \\X and decimal \\DDD escapes, multiple strings and
    parentheses give the character-strings dnspython and BIND give."""
    record = one(tmp_path, line + "\n")

    assert record.rtype == rdata.TXT
    assert record.rdata.hex() == expected


def test_d12_txt_string_over_255_octets_is_rejected_at_its_line(tmp_path: Path) -> None:
    """D12 t9: a 300-octet string is refused with file and line, never
    written with a wrapped length byte."""
    with pytest.raises(ZoneError) as info:
        parse(tmp_path, 'ok IN A 192.0.2.1\nt9 IN TXT "%s"\n' % ("a" * 300))

    assert str(info.value).startswith(str(tmp_path / "example.com.zone") + ":7: ")
    assert "too long" in str(info.value)


def test_blank_owner_ttl_class_order_and_last_ttl(tmp_path: Path) -> None:
    """Blank owners repeat the last owner; TTL and class come in either
    order; without $TTL the last explicit TTL applies (RFC 1035 5.1)."""
    head = "$ORIGIN example.com.\n@ 600 IN SOA ns1 h 1 2 3 4 5\n"
    records = parse(
        tmp_path,
        "www IN 120 A 192.0.2.1\n  A 192.0.2.2\n  3600 IN A 192.0.2.3\nx A 192.0.2.4\n",
        head,
    )

    www = [r for r in records if r.name == names.from_text("www", ORIGIN)]
    assert [r.ttl for r in www] == [120, 120, 3600]
    assert records[-1].ttl == 3600


def test_dollar_ttl_applies_and_units_parse(tmp_path: Path) -> None:
    """$TTL with BIND units sets the default; explicit TTLs do not change it
    (RFC 2308 section 4)."""
    records = parse(tmp_path, "$TTL 1h30m\na 60 A 192.0.2.1\nb A 192.0.2.2\n")

    assert [r.ttl for r in records[-2:]] == [60, 5400]


def test_escaped_dot_and_decimal_escape_in_names(tmp_path: Path) -> None:
    """`\\.` stays inside a label and `\\065` is decimal 65 ('A')."""
    record = one(tmp_path, "a\\.b\\065 IN A 192.0.2.1\n")

    assert names.labels_of(record.name)[0] == b"a.bA"


def test_origin_directive_and_absolute_names(tmp_path: Path) -> None:
    """$ORIGIN changes where relative names end; absolute names stay."""
    records = parse(
        tmp_path,
        "$ORIGIN sub.example.com.\nx A 192.0.2.1\ny.example.com. A 192.0.2.2\n",
    )

    assert names.to_text(records[-2].name) == "x.sub.example.com."
    assert names.to_text(records[-1].name) == "y.example.com."


def test_include_has_own_origin_that_does_not_leak(tmp_path: Path) -> None:
    """$INCLUDE with an origin argument: relative names inside use it, and
    the parent's origin is unchanged afterwards."""
    (tmp_path / "inc.db").write_text("x A 192.0.2.1\n")
    records = parse(tmp_path, "$INCLUDE inc.db sub.example.com.\nz A 192.0.2.2\n")

    assert names.to_text(records[-2].name) == "x.sub.example.com."
    assert names.to_text(records[-1].name) == "z.example.com."


def test_include_outside_zone_directory_is_refused(tmp_path: Path) -> None:
    """$INCLUDE cannot read files outside the zone directory."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (tmp_path / "secret").write_text("x A 192.0.2.1\n")

    with pytest.raises(ZoneError, match="outside"):
        parse(zones, "$INCLUDE ../secret\n")


@pytest.mark.parametrize(
    ("line", "hexdata"),
    [
        (
            "_sip._tcp SRV 10 20 5060 sip.example.com.",
            "000a001413c403736970076578616d706c6503636f6d00",
        ),
        (
            '@ CAA 0 issue "ca.example.net"',
            "0005697373756563612e6578616d706c652e6e6574",
        ),
        ("m MX 10 mail", "000a046d61696c076578616d706c6503636f6d00"),
        ("s SSHFP 1 1 ABCDEF", "0101abcdef"),
        ("_443._tcp TLSA 3 1 1 ( AB CD )", "030101abcd"),
        ("u TYPE65280 \\# 3 ABCDEF", "abcdef"),
        ("u2 A \\# 4 C0000201", "c0000201"),
        (
            'n NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp',
            (
                "0064000a0153075349502b44325500045f736970045f756470076578616d706c"
                "6503636f6d00"
            ),
        ),
        (
            'h HTTPS 1 . alpn="h2,h3" port=443',
            "00010000010006026832026833" "0003000201bb",
        ),
    ],
)
def test_record_types_encode_to_wire(tmp_path: Path, line: str, hexdata: str) -> None:
    """Each supported type and the RFC 3597 generic form encode correctly."""
    record = one(tmp_path, line + "\n")

    assert record.rdata.hex() == hexdata


@pytest.mark.parametrize(
    "body,reason",
    [
        ("x IN A 192.0.2.300\n", "bad address"),
        ('x IN TXT "open\n', "unbalanced quotes"),
        ("x IN A ( 192.0.2.1\n", "unbalanced parentheses"),
        ("x IN FOO 1\n", "unknown RR type"),
        ("%s IN A 192.0.2.1\n" % ("a" * 64), "label too long"),
        ("%s IN A 192.0.2.1\n" % ".".join(["a" * 60] * 5), "name too long"),
        ("x IN MX 70000 mail\n", "bad preference"),
        ("$GENERATE 1-2 x$ A 192.0.2.$\n", "directive"),
        ("x IN TYPE99 \\# 3 ABCD\n", "length"),
    ],
)
def test_syntax_errors_name_file_line_and_reason(
    tmp_path: Path, body: str, reason: str
) -> None:
    """Every syntax error is `file:line: reason` at the offending line."""
    with pytest.raises(ZoneError) as info:
        parse(tmp_path, body)

    assert str(info.value).startswith("%s:6: " % (tmp_path / "example.com.zone"))
    assert reason in str(info.value)


def test_out_of_zone_record_is_dropped_with_warning(tmp_path: Path) -> None:
    """Data outside the origin is ignored with a warning, as BIND does."""
    path = tmp_path / "example.com.zone"
    path.write_text(HEAD + "www.example.org. A 192.0.2.1\n")

    parsed = zonefile.parse_file(path, ORIGIN)

    assert all(names.to_text(r.name).endswith("example.com.") for r in parsed.records)
    assert "out-of-zone" in parsed.warnings[0] and ":6:" in parsed.warnings[0]
