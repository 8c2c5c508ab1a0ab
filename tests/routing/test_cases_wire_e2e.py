"""Field cases D01 and D02 on the wire: the real router process with the
GeoIP fixture, the cases' raw query bytes, replies checked
byte for byte where the case says so."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.rdatatype
import pytest

from .edgesim import unused_dns_port
from .helpers import CASES_TOML, REPO, TEST_DB, write_config
from .test_ecs import D01

pytestmark = pytest.mark.e2e

ZONE_EXTRA = "www IN A 192.0.2.10\n"

D02 = {
    1: "d02a000000010000000000010363646e076578616d706c6503636f6d0000010001"
       "00002904d000000000000b0008000700011800c63364",
    2: "d02b000000010000000000010363646e076578616d706c6503636f6d0000010001"
       "00002904d000000000000b0008000700011800cb0071",
    4: "d02c000000010000000000010363646e076578616d706c6503636f6d0000010001"
       "00002904d0000000000000",
    5: "d02d000000010000000000000363646e076578616d706c6503636f6d0000010001",
    6: "d03a000000010000000000010363646e076578616d706c6503636f6d00001c0001"
       "00002904d000000000000f0008000b0002380020010db8123456",
}
EU = {"192.0.2.21", "192.0.2.22", "192.0.2.23"}
AP = {"192.0.2.31", "192.0.2.32"}
FORMERR = 1


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("cases")
    chosen = unused_dns_port()
    body = CASES_TOML + f'\n[geoip]\ndatabase = "{TEST_DB}"\n'
    path = write_config(directory, body, header=f'listen = ["127.0.0.1:{chosen}"]')
    zone = directory / "zones" / "example.com.zone"
    zone.write_text(zone.read_text() + ZONE_EXTRA)
    process = subprocess.Popen(
        [sys.executable, "-m", "dnsrouter.cli", "serve", "--config", str(path)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while ask(chosen, D02[5]) is None:
            assert process.poll() is None, "router exited"
            assert time.monotonic() < deadline, "router did not answer"
        yield chosen
    finally:
        process.terminate()
        process.wait(timeout=10)


def ask(port: int, message_hex: str) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(0.5)
        client.sendto(bytes.fromhex(message_hex), ("127.0.0.1", port))
        try:
            return client.recv(4096)
        except TimeoutError:
            return None


def options(reply: bytes) -> dict[int, bytes] | None:
    """The EDNS options of the reply's OPT record (the last RR), raw, so
    that a FAMILY 0 echo can be read too; None without OPT."""
    arcount = int.from_bytes(reply[10:12], "big")
    start = reply.rfind(b"\x00\x00\x29")
    if arcount == 0 or start < 0:
        return None
    length = int.from_bytes(reply[start + 9:start + 11], "big")
    rdata = reply[start + 11:start + 11 + length]
    found = {}
    while rdata:
        code = int.from_bytes(rdata[0:2], "big")
        size = int.from_bytes(rdata[2:4], "big")
        found[code] = rdata[4:4 + size]
        rdata = rdata[4 + size:]
    return found


def a_records(reply: bytes) -> set[str]:
    message = dns.message.from_wire(reply, ignore_trailing=True)
    return {
        item.to_text() for rrset in message.answer for item in rrset
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
    }


def rcode(reply: bytes) -> int:
    return reply[3] & 0x0F


def test_d01a_family_zero_is_answered_like_no_client_information(port):
    reply = ask(port, D01["a"])

    assert reply is not None and rcode(reply) == 0
    assert reply[2] & 0x04  # AA
    ecs = (options(reply) or {}).get(8)
    assert ecs in (None, bytes.fromhex("00000000"))


def test_d01b_source_zero_gets_default_pop_and_scope_zero_echo(port):
    reply = ask(port, D01["b"])

    assert reply is not None and rcode(reply) == 0
    assert (options(reply) or {}).get(8) == bytes.fromhex("00010000")


def test_d01c_source_25_gets_ap_with_exact_echo_scope_24(port):
    reply = ask(port, D01["c"])

    assert reply is not None and rcode(reply) == 0
    assert (options(reply) or {}).get(8) == bytes.fromhex("00011918cb007180")


@pytest.mark.parametrize("case", ["d", "e", "f", "g"])
def test_d01_malformed_ecs_is_formerr_with_question_and_opt(port, case):
    reply = ask(port, D01[case])

    assert reply is not None and rcode(reply) == FORMERR
    assert reply[:2] == bytes.fromhex(D01[case][:4])
    assert int.from_bytes(reply[4:6], "big") == 1
    assert options(reply) is not None
    assert ask(port, D02[5]) is not None   # still answering


def test_d02_steps_1_to_3_exact_echo_and_no_cross_network_reuse(port):
    first = ask(port, D02[1])
    second = ask(port, D02[2])
    third = ask(port, D02[1])

    assert first and second and third
    assert a_records(first) == EU and a_records(second) == AP
    assert (options(first) or {})[8] == bytes.fromhex("00011818c63364")
    assert (options(second) or {})[8] == bytes.fromhex("00011818cb0071")
    # Same edges and ECS as step 1; the order of the A records rotates.
    assert a_records(third) == EU
    assert options(third) == options(first)
    assert len(third) == len(first)
    message = dns.message.from_wire(first)
    assert message.answer[0].ttl == 30


def test_d02_steps_4_and_5_no_ecs_unless_asked_no_opt_without_edns(port):
    with_edns = ask(port, D02[4])
    without = ask(port, D02[5])

    assert with_edns and without
    assert a_records(with_edns) == {"192.0.2.41"}
    assert options(with_edns) == {}
    assert int.from_bytes(without[10:12], "big") == 0


def test_d02_step6_ipv6_scope_48_under_source_56(port):
    reply = ask(port, D02[6])

    assert reply is not None
    assert a_records(reply) == {"2001:db8:e0::21", "2001:db8:e0::22"}
    assert (options(reply) or {})[8] == bytes.fromhex("0002383020010db8123456")


def test_d02_step7_static_record_echoes_scope_zero(port):
    query = dns.message.make_query("www.example.com", "A", use_edns=0)
    query.use_edns(0, options=[dns.edns.ECSOption("198.51.100.0", 24)])
    reply = ask(port, query.to_wire().hex())

    assert reply is not None and a_records(reply) == {"192.0.2.10"}
    assert (options(reply) or {})[8] == bytes.fromhex("00011800c63364")
