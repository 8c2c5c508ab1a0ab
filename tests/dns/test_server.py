"""The Twisted protocols on fake transports and virtual time: UDP replies,
RFC 7766 framing, pipelining, idle timeout and the connection cap."""

from __future__ import annotations

import struct
from typing import Any

import dns.message
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from dnsrouter.server import (
    DnsDatagramProtocol,
    DnsStreamFactory,
    ResponderSlot,
)
from tests.dns.helpers import make_responder

PEER = IPv4Address("TCP", "192.0.2.1", 40000)


class FakeDatagramTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def write(self, data: bytes, addr: object) -> None:
        self.sent.append((data, addr))


def query(name: str, qid: int, **kwargs: object) -> bytes:
    message = dns.message.make_query(name, "A", id=qid, use_edns=False, **kwargs)
    return message.to_wire()


def framed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def unframe(stream: bytes) -> list[dns.message.Message]:
    out = []
    while stream:
        (length,) = struct.unpack_from("!H", stream)
        out.append(dns.message.from_wire(stream[2 : 2 + length]))
        stream = stream[2 + length :]
    return out


def connect(factory: DnsStreamFactory) -> tuple[Any, StringTransport]:
    proto = factory.buildProtocol(PEER)
    assert proto is not None
    transport = StringTransport(peerAddress=PEER)
    proto.makeConnection(transport)
    return proto, transport


def make_factory(reactor: MemoryReactorClock, cap: int = 4) -> DnsStreamFactory:
    return DnsStreamFactory(ResponderSlot(make_responder()), reactor, 10.0, cap)


def test_udp_reply_goes_back_to_the_sender_and_drops_are_silent() -> None:
    """A query is answered to its source; a response (QR) gets nothing."""
    proto = DnsDatagramProtocol(ResponderSlot(make_responder()))
    proto.transport = FakeDatagramTransport()  # type: ignore[assignment]

    proto.datagramReceived(query("www.example.com", 7), ("192.0.2.1", 5353))
    proto.datagramReceived(b"\x00\x01\x80" + b"\x00" * 9, ("192.0.2.1", 5353))

    ((reply, addr),) = proto.transport.sent
    assert addr == ("192.0.2.1", 5353) and dns.message.from_wire(reply).id == 7


def test_tcp_pipelined_queries_split_anywhere_all_get_framed_replies() -> None:
    """D04 5 / RFC 7766 6.2.1.1: two queries back to back, delivered in
    odd-sized pieces, get two complete length-prefixed replies."""
    reactor = MemoryReactorClock()
    proto, transport = connect(make_factory(reactor))
    stream = framed(query("big.example.com", 1)) + framed(query("www.example.com", 2))

    for start in range(0, len(stream), 7):
        proto.dataReceived(stream[start : start + 7])

    replies = unframe(transport.value())
    assert [r.id for r in replies] == [1, 2]
    assert len(replies[0].answer[0]) == 40


def test_tcp_idle_connection_is_closed_after_the_timeout() -> None:
    """RFC 7766 6.2.3: a connection idle for the timeout is closed; traffic
    restarts the timer."""
    reactor = MemoryReactorClock()
    proto, transport = connect(make_factory(reactor))

    reactor.advance(9)
    proto.dataReceived(framed(query("www.example.com", 3)))
    reactor.advance(9)
    assert not transport.disconnecting
    reactor.advance(1.5)

    assert transport.disconnecting


def test_tcp_connection_cap_refuses_extra_connections_until_one_closes() -> None:
    """Over the cap, buildProtocol returns None (Twisted closes it)."""
    reactor = MemoryReactorClock()
    factory = make_factory(reactor, cap=2)
    first, _ = connect(factory)
    connect(factory)

    assert factory.buildProtocol(PEER) is None
    first.connectionLost(None)
    assert factory.buildProtocol(PEER) is not None


def test_tcp_zero_length_and_garbage_frames_do_not_break_the_stream() -> None:
    """A zero-length frame is dropped, garbage gets FORMERR, and the next
    query on the connection is still answered."""
    reactor = MemoryReactorClock()
    proto, transport = connect(make_factory(reactor))

    proto.dataReceived(b"\x00\x00" + framed(b"\x12\x34" + b"\x00" * 4 + b"\xff" * 8))
    proto.dataReceived(framed(query("www.example.com", 9)))

    stream = transport.value()
    (length,) = struct.unpack_from("!H", stream)
    assert stream[2:4] == b"\x12\x34" and stream[5] & 0x0F == 1
    assert unframe(stream[2 + length :])[0].id == 9


def test_tcp_reader_that_stops_reading_pauses_query_intake() -> None:
    """Backpressure: when the transport's buffer is full Twisted pauses the
    protocol, which stops reading the socket until it drains."""
    proto, transport = connect(make_factory(MemoryReactorClock()))

    assert transport.producer is proto
    proto.pauseProducing()
    assert transport.producerState == "paused"
    proto.resumeProducing()
    assert transport.producerState == "producing"
