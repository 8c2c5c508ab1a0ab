"""Fuzzing the responder in process: 100,000+ random and mutated packets.

Seeds are real queries (plain, EDNS, ECS, NSID, CDN and static names);
mutations flip bits, overwrite bytes, truncate, extend, rewrite counts and
plant compression pointers.  Every packet must be answered or dropped
without an exception, quickly, with a reply that is a well-formed DNS
response carrying the query's ID; afterwards normal queries still work.
A fixed seed makes any failure reproducible.
"""

from __future__ import annotations

import logging
import random
import struct
import time

import dns.edns
import dns.message
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from dnsrouter.server import DnsStreamFactory, ResponderSlot
from tests.dns.helpers import ask, make_responder

PACKETS = 100_000
SEED = 20241204
# Generous per-packet bound on CPU time (not wall time, which other load
# on the machine stretches): a reply takes microseconds; anything near
# this means a loop.
MAX_PACKET_SECONDS = 0.1


def seeds() -> list[bytes]:
    ecs = dns.edns.ECSOption("198.51.100.0", 24)
    nsid = dns.edns.GenericOption(dns.edns.NSID, b"")
    out = []
    for name in (
        "www.example.com",
        "cdn.example.com",
        "big.example.com",
        "x.w.example.com",
        "nope.example.org",
    ):
        for kwargs in (
            {"use_edns": False},
            {"use_edns": 0},
            {"use_edns": 0, "options": [ecs, nsid]},
        ):
            out.append(dns.message.make_query(name, "A", **kwargs).to_wire())
    return out


def mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        if choice == 0 and data:
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice == 2:
            del data[rng.randrange(len(data) + 1) :]
        elif choice == 3:
            data += rng.randbytes(rng.randint(1, 40))
        elif choice == 4 and len(data) >= 12:
            data[4 + 2 * rng.randrange(4) + 1] = rng.choice([0, 1, 2, 255])
        elif choice == 5 and len(data) > 14:
            pos = rng.randrange(12, len(data) - 1)
            data[pos : pos + 2] = struct.pack(
                "!H", 0xC000 | rng.randrange(len(data) + 4)
            )
        elif choice == 6 and len(data) > 12:
            data[2] &= 0x7F  # keep it a query so it reaches the parser
    return bytes(data)


def check_reply(query: bytes, reply: bytes | None, parse: bool) -> None:
    if reply is None:
        assert len(query) < 12 or query[2] & 0x80
        return
    assert len(reply) >= 12 and reply[:2] == query[:2] and reply[2] & 0x80
    if parse:
        dns.message.from_wire(reply, ignore_trailing=False)


def test_fuzzed_packets_never_raise_hang_or_break_the_responder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """100,000 packets: no exception, no slow packet, valid replies; then
    normal queries are answered exactly as before."""
    rng = random.Random(SEED)
    responder = make_responder()
    corpus = seeds()
    caplog.set_level(logging.ERROR, logger="dnsrouter.query")
    started = time.monotonic()

    for index in range(PACKETS):
        if index % 4 == 0:
            packet = rng.randbytes(rng.randint(0, 80))
        else:
            packet = mutate(rng, rng.choice(corpus))
        before = time.thread_time()
        reply = responder.respond(packet, "192.0.2.1", "udp" if index % 2 else "tcp")
        assert time.thread_time() - before < MAX_PACKET_SECONDS, packet.hex()
        check_reply(packet, reply, parse=index % 10 == 0)

    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert time.monotonic() - started < 120
    assert {r.address for r in ask(responder, "www.example.com").answer[0]} == {
        "192.0.2.10"
    }
    assert ask(responder, "nope.example.com").rcode() == 3


def test_random_tcp_byte_stream_never_breaks_the_protocol() -> None:
    """Random chunks on one TCP connection: framing never raises, and a
    fresh connection is answered afterwards."""
    rng = random.Random(SEED)
    factory = DnsStreamFactory(
        ResponderSlot(make_responder()), MemoryReactorClock(), 10.0, 8
    )
    peer = IPv4Address("TCP", "192.0.2.1", 40000)
    proto = factory.buildProtocol(peer)
    assert proto is not None
    proto.makeConnection(StringTransport(peerAddress=peer))

    for _ in range(5_000):
        proto.dataReceived(rng.randbytes(rng.randint(1, 300)))

    fresh = factory.buildProtocol(peer)
    assert fresh is not None
    transport = StringTransport(peerAddress=peer)
    fresh.makeConnection(transport)
    query = dns.message.make_query("www.example.com", "A", id=77).to_wire()
    fresh.dataReceived(struct.pack("!H", len(query)) + query)
    assert dns.message.from_wire(transport.value()[2:]).id == 77
